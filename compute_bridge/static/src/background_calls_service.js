import { registry } from "@web/core/registry";
import { debounce } from "@web/core/utils/timing";

// Reload the open form or list when background calls store results on records it shows, so
// they appear without a manual reload. Bursts (a chunk per runner commit) reload once.
export const RELOAD_DELAY_MS = 300;
export const CALLS_ENDED = "compute_bridge.calls_ended";

export const computeBridgeBackgroundCallsService = {
    dependencies: ["bus_service", "action"],
    start(env, { bus_service, action }) {
        const reload = debounce(() => {
            const controller = action.currentController;
            if (controller) {
                action.restore(controller.jsId);
            }
        }, RELOAD_DELAY_MS);
        bus_service.subscribe(CALLS_ENDED, ({ model, ids }) => {
            const controller = action.currentController;
            if (!controller || controller.props.resModel !== model) {
                return;
            }
            const viewType = controller.view?.type;
            if (viewType === "list" || (viewType === "form" && ids.includes(controller.props.resId))) {
                reload();
            }
        });
        bus_service.start();
    },
};

registry.category("services").add("compute_bridge_background_calls", computeBridgeBackgroundCallsService);
