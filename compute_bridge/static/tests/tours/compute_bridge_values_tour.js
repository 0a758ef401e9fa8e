/** @odoo-module **/
/* What the browser does with values at the edges of a float, against the real services. Run by
 * compute_bridge/tests/test_tour.py.
 *   - a number too large for a float ("1e400") is refused where it is saved, with the field's
 *     name, instead of becoming 0;
 *   - decimals keep the precision typed: 0.001 + 0.002 shows 0.003 in the form and the list;
 *   - the service instances list shows a PID as written and a lost broker as such.
 */

import { queryAll, queryOne } from "@odoo/hoot-dom";
import { registry } from "@web/core/registry";

function expectText(selector, expected) {
    const shown = queryOne(selector).textContent.trim();
    if (shown !== expected) {
        throw new Error(`${selector}: expected "${expected}", shown "${shown}"`);
    }
}

/** Create an operation from the list, type both values and press Suma (which saves first). */
function sumaSteps(first, second) {
    return [
        { content: "Create an operation", trigger: ".o_list_button_add", run: "click" },
        {
            content: `Type ${first}`,
            trigger: ".o_field_widget[name=field_1] input",
            run: `edit ${first}`,
        },
        {
            content: `Type ${second}`,
            trigger: ".o_field_widget[name=field_2] input",
            run: `edit ${second}`,
        },
        {
            content: "Press Suma",
            trigger: ".o_form_statusbar button[name=action_suma]:visible",
            run: "click",
        },
    ];
}

registry.category("web_tour.tours").add("compute_bridge_refused_value_tour", {
    url: "/odoo/action-compute_bridge.compute_operation_action",
    steps: () => [
        // a number no float can hold
        ...sumaSteps("1e400", "1"),
        {
            content: "The user is told which value was refused",
            trigger: ".modal .modal-body:contains(First Value)",
        },
        { content: "Close the message", trigger: ".modal .btn-primary", run: "click" },
        {
            content: "Nothing was computed",
            trigger: ".o_statusbar_status button.o_arrow_button_current[data-value=draft]",
        },
        { content: "Discard", trigger: ".o_form_button_cancel", run: "click" },
        { content: "Back to the list", trigger: ".o_list_button_add" },
    ],
});

registry.category("web_tour.tours").add("compute_bridge_precision_tour", {
    url: "/odoo/action-compute_bridge.compute_operation_action",
    steps: () => [
        ...sumaSteps("0.001", "0.002"),
        {
            content: "The operation is done",
            trigger: ".o_statusbar_status button.o_arrow_button_current[data-value=done]",
        },
        {
            content: "The form shows the operands and the sum as typed and computed",
            trigger: ".o_field_widget[name=result]",
            run() {
                expectText(".o_field_widget[name=result]", "0.003");
                for (const [name, value] of [["field_1", "0.001"], ["field_2", "0.002"]]) {
                    const input = queryOne(`.o_field_widget[name=${name}] input`);
                    if (input.value !== value) {
                        throw new Error(`${name}: expected "${value}", shown "${input.value}"`);
                    }
                }
            },
        },
        {
            content: "Back to the list",
            trigger: ".o_back_button, .breadcrumb-item a",
            run: "click",
        },
        {
            content: "The list shows the sum as computed",
            trigger: ".o_data_row:first .o_data_cell[name=result]",
            run() {
                expectText(".o_data_row:first-child .o_data_cell[name=result]", "0.003");
                if (!queryAll(".o_data_row:first-child .o_data_cell[name=name]").length) {
                    throw new Error("the list has no name column");
                }
            },
        },
    ],
});

registry.category("web_tour.tours").add("compute_bridge_instances_tour", {
    url: "/odoo/action-compute_bridge.compute_service_instance_action",
    steps: () => [
        {
            content: "The instance whose broker is lost: PID as written, its services, its state",
            trigger: ".o_data_row .o_data_cell[name=pid]",
            run() {
                expectText(".o_data_row:first-child .o_data_cell[name=pid]", "23175");
                expectText(".o_data_row:first-child .o_data_cell[name=services]",
                    "compute, notify");
                expectText(".o_data_row:first-child .o_data_cell[name=state]", "Broker lost");
            },
        },
    ],
});
