{
    "name": "Compute Bridge",
    "summary": "Call Nameko microservices over RabbitMQ from Odoo",
    "version": "18.0.1.1.0",
    "category": "Technical",
    "license": "LGPL-3",
    "author": "compute_bridge contributors",
    "website": "https://github.com/compute-bridge/compute_bridge",
    "depends": ["base_setup", "web"],
    "external_dependencies": {
        "python": ["kombu", "amqp", "prometheus_client", "opentelemetry-sdk"],
    },
    "data": [
        "security/compute_bridge_security.xml",
        "security/ir.model.access.csv",
        "views/compute_operation_views.xml",
        "views/compute_operation_stats_views.xml",
        "views/compute_service_instance_views.xml",
        "views/res_config_settings_views.xml",
        "views/compute_bridge_menus.xml",
        "data/ir_actions_server_data.xml",
        "data/compute_service_instance_data.xml",
    ],
    "assets": {
        "web.assets_tests": ["compute_bridge/static/tests/tours/*.js"],
    },
    "application": True,
    "installable": True,
}
