/** @odoo-module **/
/* Settings > Compute Bridge: the saved URL is shown as text with its password masked, and Test
 * connection tests the URL on screen, unsaved: no "save first?" dialog (whose "Discard" tested
 * the saved URL and reported a false success).
 * Run by compute_bridge/tests/test_test_connection.py with a working URL saved.
 */

import { queryAll, queryOne } from "@odoo/hoot-dom";
import { registry } from "@web/core/registry";

const UNSAVED_URL = "pyamqp://guest:typed@127.0.0.1:1"; // nothing listens on port 1

registry.category("web_tour.tours").add("compute_bridge_test_connection_tour", {
    steps: () => [
        {
            content: "The saved URL is shown as text, only its password masked",
            trigger: ".o_field_widget[name=compute_bridge_broker_url] input",
            run() {
                const input = queryOne(".o_field_widget[name=compute_bridge_broker_url] input");
                if (input.type === "password" || !/^pyamqp:\/\/[^:]+:\*\*\*@/.test(input.value)) {
                    throw new Error(`expected a masked URL as text, got ${input.type} "${input.value}"`);
                }
            },
        },
        {
            content: "Type a broker URL, without saving",
            trigger: ".o_field_widget[name=compute_bridge_broker_url] input",
            run: `edit ${UNSAVED_URL}`,
        },
        {
            content: "Press Test connection",
            trigger: "button[name=action_compute_bridge_test_connection]",
            run: "click",
        },
        {
            content: "The URL on screen was tested: a failure, at once, without a dialog",
            trigger: ".o_notification:contains(127.0.0.1:1)",
            run() {
                if (queryAll(".modal").length) {
                    throw new Error(`a dialog opened: "${queryOne(".modal").textContent}"`);
                }
                const text = queryOne(".o_notification").textContent;
                if (!text.includes("Cannot reach the message broker")) {
                    throw new Error(`expected a failure for ${UNSAVED_URL}, got "${text}"`);
                }
            },
        },
    ],
});
