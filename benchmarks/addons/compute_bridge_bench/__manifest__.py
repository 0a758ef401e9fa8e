{
    "name": "Compute Bridge benchmark helper",
    "summary": "The blog post's per-click ClusterRpcProxy, for `make bench` to compare against",
    "version": "18.0.1.0.0",
    "category": "Hidden",
    "license": "LGPL-3",
    "author": "compute_bridge contributors",
    "depends": ["compute_bridge"],
    "external_dependencies": {"python": ["nameko"]},
    "data": [],
    "installable": True,
    "auto_install": False,
}
