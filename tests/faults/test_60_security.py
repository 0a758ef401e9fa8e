"""Who may read, call and configure; where the broker's password may never show; who may post
heartbeats."""

import json
import time
import urllib.error
import urllib.request

import faults_harness as harness
import pytest
from conftest import RPC_TIMEOUT, set_bridge_params, xmlid_to_id
from faults_harness import click, create_operations, notification

pytestmark = pytest.mark.odoo
ACCESS_ERROR = 4  # XML-RPC fault code of odoo.exceptions.AccessError


def expect_access_error(call, *args, **kwargs):
    with pytest.raises(harness.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.kind == ACCESS_ERROR, caught.value
    harness.readable(caught.value.message)
    return caught.value


def test_portal_user_can_neither_read_nor_call(odoo, admin):
    [op] = create_operations(admin, [(1, 2)])
    portal = odoo.xmlrpc("cb_portal", "cb_portal")
    expect_access_error(portal.call, harness.OPERATION, "search_read", [], fields=["result"])
    expect_access_error(portal.call, harness.OPERATION, "read", [op], fields=["result"])
    expect_access_error(portal.call, harness.OPERATION, "create", [{"field_1": 1}])
    expect_access_error(portal.call, harness.OPERATION, "action_suma", [op])
    expect_access_error(portal.call, harness.OPERATION, "compute_sum", 1, 2)
    expect_access_error(portal.call, "compute.service.instance", "search_read", [])
    expect_access_error(portal.call, "ir.config_parameter", "get_param",
                        "compute_bridge.broker_url")


def test_public_user_can_neither_read_nor_call(odoo, admin):
    """Without a session nothing answers; and no access right of the addon is global or given
    to the public or portal groups (the public user's session on a website would use those)."""
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
        "model": harness.OPERATION, "method": "search_read", "args": [[]],
        "kwargs": {"fields": ["result"]}}}).encode()
    request = urllib.request.Request(
        odoo.url + "/web/dataset/call_kw/compute.operation/search_read", data=body,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert "result" not in answer, answer
    assert answer["error"]["data"]["name"] == "odoo.http.SessionExpiredException", answer
    public_groups = [xmlid_to_id(admin, "base.group_public"),
                     xmlid_to_id(admin, "base.group_portal")]
    for model in (harness.OPERATION, "compute.service.instance"):
        rights = admin.call("ir.model.access", "search_read", [("model_id.model", "=", model)],
                            fields=["name", "group_id", "perm_read"])
        assert rights, model
        open_rights = [r for r in rights
                       if not r["group_id"] or r["group_id"][0] in public_groups]
        assert not open_rights, open_rights
    public_uid = xmlid_to_id(admin, "base.public_user")
    with pytest.raises((harness.RpcError, RuntimeError)):
        harness.XmlRpc(odoo.url, odoo.db, "public", "", timeout=10)
    assert public_uid


def test_plain_user_cannot_change_settings_nor_read_the_broker_url(odoo, admin, broker):
    user = odoo.xmlrpc("cb_user", "cb_user")
    key = "compute_bridge.broker_url"
    expect_access_error(user.call, "ir.config_parameter", "get_param", key)
    expect_access_error(user.call, "ir.config_parameter", "search_read",
                        [("key", "like", "compute_bridge")])
    expect_access_error(user.call, "ir.config_parameter", "set_param", key, "pyamqp://evil")
    try:  # default_get reads config parameters with sudo(): it must not hand the URL out
        defaults = user.call("res.config.settings", "default_get", ["compute_bridge_broker_url"])
    except harness.RpcError as error:
        assert error.kind == ACCESS_ERROR, error
    else:
        shown = defaults.get("compute_bridge_broker_url") or ""
        assert broker.node.host not in shown and harness.BROKER_USER not in shown, (
            "a plain user read the broker URL through res.config.settings.default_get: %r"
            % shown)
    expect_access_error(user.call, "res.config.settings", "create",
                        {"compute_bridge_broker_url": "pyamqp://evil"})
    fields = user.call(harness.OPERATION, "fields_get", attributes=["type"])
    assert not [f for f in fields if "broker" in f or "url" in f], fields
    assert admin.call("ir.config_parameter", "get_param", key) == broker.uri()


def test_bridge_manager_cannot_change_other_settings(odoo, admin):
    """The addon grants its managers res.config.settings: saving goes through execute(), which
    only administrators may call; but set_values() is public too, and must not let a
    non-administrator write the other applications' settings."""
    manager = odoo.jsonrpc("cb_manager", "cb_manager")  # set_values returns None: JSON, not XML
    key = "web.web_app_name"
    before = admin.call("ir.config_parameter", "get_param", key)
    marker = "set-by-compute-manager-%d" % time.time()
    try:
        settings_id = manager.call("res.config.settings", "create", {"web_app_name": marker})
    except harness.RpcError as error:
        assert error.kind == "odoo.exceptions.AccessError", error
        return
    with pytest.raises(harness.RpcError) as caught:
        manager.call("res.config.settings", "execute", [settings_id])
    assert caught.value.kind == "odoo.exceptions.AccessError", caught.value
    try:
        manager.call("res.config.settings", "set_values", [settings_id])
    except harness.RpcError as error:
        assert error.kind == "odoo.exceptions.AccessError", error
    after = admin.call("ir.config_parameter", "get_param", key)
    admin.call("ir.config_parameter", "set_param", key, before or False)
    assert after != marker, (
        "a compute_bridge manager (not an administrator) changed %s through "
        "res.config.settings.set_values()" % key)


def _texts(value):
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def assert_no_password(broker, value, where):
    quoted = harness.urllib.parse.quote(broker.password, safe="")
    leaks = [t for t in _texts(value) if broker.password_token in t or quoted in t]
    assert not leaks, "broker password in %s: %r" % (where, leaks[:3])


def test_broker_password_never_shown(odoo, admin, broker):
    """Not in views (arch), not in what Settings reads, not in notifications or errors, for the
    administrator included: the password is written, never read back."""
    manager = odoo.xmlrpc("cb_manager", "cb_manager")
    for client in (admin, manager):
        assert_no_password(broker, client.call(harness.OPERATION, "get_views",
                                               [[False, "form"], [False, "list"]]),
                           "%s get_views as %s" % (harness.OPERATION, client.login))
    assert_no_password(broker, admin.call("res.config.settings", "get_views", [[False, "form"]]),
                       "res.config.settings get_views as admin")
    # Settings are for administrators only: a bridge manager is refused, not shown less
    expect_access_error(manager.call, "res.config.settings", "default_get",
                        ["compute_bridge_broker_url"])
    defaults = admin.call("res.config.settings", "default_get", ["compute_bridge_broker_url"])
    settings_id = admin.call("res.config.settings", "create", {})
    read = admin.call("res.config.settings", "read", [settings_id],
                      fields=["compute_bridge_broker_url"])
    # "Test connection" with the saved (right) URL, then with a wrong password on screen
    actions = [admin.call("res.config.settings", "action_compute_bridge_test_connection",
                          [settings_id])]
    wrong = broker.uri().replace(harness.urllib.parse.quote(broker.password, safe=""),
                                 "x" + harness.urllib.parse.quote(broker.password, safe=""))
    admin.call("res.config.settings", "write", [settings_id], {"compute_bridge_broker_url": wrong})
    actions.append(admin.call("res.config.settings", "action_compute_bridge_test_connection",
                              [settings_id]))
    # the button with a refused login
    set_bridge_params(admin, url=wrong)
    try:
        [op] = create_operations(admin, [(1, 1)])
        kind, message = notification(click(admin, [op]))
        assert kind == "danger"
        errors = [message, admin.call(harness.OPERATION, "read", [op],
                                      fields=["error_message"])[0]]
    finally:
        set_bridge_params(admin, url=broker.uri(), timeout=RPC_TIMEOUT)
    assert_no_password(broker, actions, "Test connection notifications")
    assert_no_password(broker, errors, "the button's error")
    assert_no_password(broker, defaults, "res.config.settings default_get")
    assert_no_password(broker, read, "res.config.settings read")


def post_heartbeat(odoo, body, secret=None):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Heartbeat-Secret"] = secret
    request = urllib.request.Request(odoo.url + "/compute_bridge/heartbeat",
                                     data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_heartbeats_demand_the_secret(odoo, admin, fleet):
    forged = {"instance_id": "forged-%d" % time.time(), "service": "compute", "pid": 1}
    status = post_heartbeat(odoo, forged)
    if status == 404:
        pytest.skip("!!!! no /compute_bridge/heartbeat route in this Odoo: nothing accepts data "
                    "from the services yet, so there is no secret to check !!!!")
    assert status == 403
    assert post_heartbeat(odoo, forged, secret="") == 403
    assert post_heartbeat(odoo, forged, secret=odoo.heartbeat_secret + "x") == 403
    assert post_heartbeat(odoo, forged, secret=odoo.heartbeat_secret[:-1]) == 403
    model = "compute.service.instance"
    assert not admin.call(model, "search", [("instance_id", "=", forged["instance_id"])])
    # the real services, started with the shared secret (and Odoo's URL), are heard
    assert "HEARTBEAT_URL" in fleet.env
    fleet.stop_all()
    service = fleet.start()
    harness.wait_until(lambda: admin.call(model, "search_count", []) > 0, 30,
                       what="a heartbeat from %s recorded" % service.label)
    assert post_heartbeat(odoo, forged, secret=odoo.heartbeat_secret) == 200
    assert admin.call(model, "search", [("instance_id", "=", forged["instance_id"])])
