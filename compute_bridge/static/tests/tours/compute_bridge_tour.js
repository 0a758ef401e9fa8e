/** @odoo-module **/
/* A user's first sum, in a real browser against the real services: open Operations, create a
 * record, type 99999 and 99999, press Suma, see 199998. Then the same with Suma in background:
 * the operation is queued at once (the runner cron computes it after the request has
 * committed). Run by compute_bridge/tests/test_tour.py.
 */

import { queryOne } from "@odoo/hoot-dom";
import { registry } from "@web/core/registry";

const OPERAND = "99999";
const EXPECTED = 199998;

function createOperation(first, second) {
    return [
        {
            content: "Create an operation",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            content: "Type the first value",
            trigger: ".o_field_widget[name=field_1] input",
            run: `edit ${first}`,
        },
        {
            content: "Type the second value",
            trigger: ".o_field_widget[name=field_2] input",
            run: `edit ${second}`,
        },
    ];
}

registry.category("web_tour.tours").add("compute_bridge_tour", {
    url: "/odoo/action-compute_bridge.compute_operation_action",
    steps: () => [
        ...createOperation(OPERAND, OPERAND),
        {
            content: "Press Suma: the record is saved, then the compute service adds the values",
            trigger: ".o_form_statusbar button[name=action_suma]:visible",
            run: "click",
        },
        {
            content: "The notification announces the sum (it fades: checked first)",
            trigger: ".o_notification",
            run() {
                // any notification ends the wait; a failure's text says what went wrong
                const text = queryOne(".o_notification").textContent;
                if (!text.includes(String(EXPECTED))) {
                    throw new Error(`expected a notification with ${EXPECTED}, got "${text}"`);
                }
            },
        },
        {
            content: "The operation is done",
            trigger: ".o_statusbar_status button.o_arrow_button_current[data-value=done]",
        },
        {
            content: "The result is 199998",
            trigger: ".o_field_widget[name=result]",
            run() {
                // the Float widget shows "199,998.00" in English; compare the number, not the
                // locale's way of writing it
                const shown = queryOne(".o_field_widget[name=result]").textContent;
                const value = parseFloat(shown.replace(/[^0-9.-]/g, ""));
                if (value !== EXPECTED) {
                    throw new Error(`expected ${EXPECTED}, the form shows "${shown}"`);
                }
            },
        },
    ],
});

registry.category("web_tour.tours").add("compute_bridge_background_tour", {
    url: "/odoo/action-compute_bridge.compute_operation_action",
    steps: () => [
        ...createOperation(20, 22),
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
