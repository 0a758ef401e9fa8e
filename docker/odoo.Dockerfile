# Odoo 18 (the official image) plus what the compute_bridge addon imports at call time: nameko
# and its pinned dependencies, from the same services/requirements.txt as the services image.
#
# odoo:18 is Ubuntu 24.04 with the system Python 3.12, which PEP 668 guards: this image exists
# for this one Odoo, so --break-system-packages is what we want. --ignore-installed keeps pip
# from trying to remove the apt-installed copies; ours land in /usr/local and come first.
# services/requirements.txt keeps setuptools < 81 (nameko 2.14.1 imports pkg_resources).
FROM odoo:18

USER root
COPY services/requirements.txt /tmp/compute_bridge/requirements.txt
RUN pip3 install --no-cache-dir --break-system-packages --ignore-installed \
        -r /tmp/compute_bridge/requirements.txt \
    && rm -rf /tmp/compute_bridge
USER odoo
