/** @odoo-module **/
/* Suma in background from the form: the operation is queued at once (the runner cron computes
 * it after the request has committed). Run by compute_bridge/tests/test_tour.py.
 */

import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("compute_bridge_background_tour", {
    url: "/odoo/action-compute_bridge.compute_operation_action",
    steps: () => [
        {
            content: "Create an operation",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            content: "Type the first value",
            trigger: ".o_field_widget[name=field_1] input",
            run: "edit 20",
        },
        {
            content: "Type the second value",
            trigger: ".o_field_widget[name=field_2] input",
            run: "edit 22",
        },
        {
            content: "Press Suma in background: the record is saved and queued",
            trigger: ".o_form_statusbar button[name=action_suma_queue]:visible",
            run: "click",
        },
        {
            content: "The operation is queued",
            trigger: ".o_statusbar_status button.o_arrow_button_current[data-value=queued]",
        },
        {
            content: "Its call is under way: no Suma button until it ends",
            trigger: ".o_form_statusbar:not(:has(button[name^=action_suma]))",
        },
    ],
});
