"""Last: the broker's password in no log line of the whole run (Odoo server and install logs,
every `nameko run` log), and no Odoo worker killed or crashed along the way."""

import re

import faults_harness as harness


def test_no_broker_password_in_any_log(broker, odoo, fleet):
    quoted = harness.urllib.parse.quote(broker.password, safe="")
    logs = dict(fleet.logs())
    logs["odoo-server.log"] = odoo.log()
    with open(odoo.init_log_path, errors="replace") as handle:
        logs["odoo-init.log"] = handle.read()
    assert logs["odoo-server.log"], "the Odoo log is empty"
    leaks = {name: [line for line in text.splitlines()
                    if broker.password_token in line or quoted in line][:3]
             for name, text in logs.items()}
    leaks = {name: lines for name, lines in leaks.items() if lines}
    assert not leaks, leaks


def test_no_worker_died(odoo):
    text = odoo.log()
    dead = re.findall(r".*(?:Worker \(\d+\) (?:timeout|virtual memory|CPU time)|"
                      r"Worker .* (?:killed|crash)|CRITICAL).*", text)
    assert not dead, dead[:5]
