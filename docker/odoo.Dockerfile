# Odoo 18 with the compute_bridge addon in it. Build from the repository root:
#   docker build -f docker/odoo.Dockerfile -t compute-bridge-odoo:18.0.1.1.0 .
#
# The base is a dated build of the official image (odoo:18 is rebuilt nightly). To bump it, pick
# a newer 18.0-YYYYMMDD tag (https://hub.docker.com/_/odoo), rebuild, run the upgrade step
# (`docker compose run --rm odoo-upgrade`) and `make test`; pin the digest too
# (odoo:18.0-YYYYMMDD@sha256:...) for builds that must not change at all.
#
# The image is Ubuntu 24.04 with the system Python 3.12 and Odoo's dependencies from apt (greenlet,
# gevent, Werkzeug, requests, urllib3 at Ubuntu Noble's versions, which Odoo 18 pins for 3.12).
# requirements.txt lists only what the addon adds (kombu and py-amqp: the addon speaks nameko's
# protocol without nameko; prometheus-client and OpenTelemetry for its metrics and traces); pip
# keeps every package apt already provides, so the distribution's
# copies, and their security updates, are used. PEP 668 guards that Python:
# --break-system-packages is right for an image that exists for this one Odoo.
FROM odoo:18.0-20250819

# The release, as in compute_bridge/__manifest__.py (tests/unit/test_compose.py checks they agree).
LABEL org.opencontainers.image.title="compute_bridge for Odoo 18" \
      org.opencontainers.image.version="18.0.1.1.0" \
      org.opencontainers.image.licenses="LGPL-3.0-only"

USER root
COPY requirements.txt /tmp/compute_bridge/requirements.txt
RUN pip3 install --no-cache-dir --break-system-packages -r /tmp/compute_bridge/requirements.txt \
    && python3 -c "import amqp, kombu, prometheus_client, opentelemetry.sdk" \
    && rm -rf /tmp/compute_bridge

# The addon is part of the image, not mounted from a checkout: what runs is what was built. Not
# under /mnt/extra-addons: the base image declares that a VOLUME, and compose carries a
# container's anonymous volumes over to its replacement, so an old copy would hide the new one.
COPY compute_bridge /opt/compute_bridge/addons/compute_bridge
COPY docker/odoo.conf /etc/odoo/odoo.conf
COPY docker/odoo-entrypoint.sh docker/entrypoint-lib.sh /usr/local/bin/
RUN chmod 644 /etc/odoo/odoo.conf /usr/local/bin/entrypoint-lib.sh \
    && chmod 755 /usr/local/bin/odoo-entrypoint.sh

USER odoo
ENV ODOO_RC=/etc/odoo/odoo.conf
EXPOSE 8069 8072
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8069/web/health?db_server_status=1"]
ENTRYPOINT ["/usr/local/bin/odoo-entrypoint.sh"]
CMD ["odoo"]
