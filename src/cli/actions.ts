/**
 * `qwen-edge actions list` and `qwen-edge actions test NAME --args JSON`: the configured device actions
 * (docs/ACTIONS.md), and what one call would publish, checked exactly as the daemon checks it (schema,
 * topic template, publish policy), without loading the model or connecting to the broker.
 */
import {loadConfig} from "../config.js";
import {ConfigError} from "../errors.js";
import {compileActions, type Action} from "../actions/action.js";
import {ActionExecutor} from "../actions/executor.js";
import {replyPolicy} from "../mqtt/reply-policy.js";
import {topicLayout} from "../mqtt/topics.js";
import {compileRoutes} from "../routes/route.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";
import {createLogger} from "../log.js";

const NO_ACTIONS = "no actions configured: add an `actions:` list to the YAML file given with --config (see docs/ACTIONS.md)\n";

export async function actionsCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["args"]});
    const [sub, name, ...extra] = positional;
    if (sub !== "list" && sub !== "test") throw new ConfigError("actions: use `qwen-edge actions list` or `qwen-edge actions test NAME --args JSON`");
    if (extra.length > 0 || (sub === "list" && name !== undefined)) throw new ConfigError(`actions ${sub}: unexpected argument "${extra[0] ?? name}"`);
    const config = loadConfig({args: configArgs});
    const actions = compileActions(config.actions).actions;
    const routes = compileRoutes(config.routes).routes;
    if (sub === "list") {
        process.stdout.write(actions.length === 0 ? NO_ACTIONS : listActions(actions, routes.map((r) => ({name: r.name, actions: r.actions ?? []}))));
        return EXIT.ok;
    }
    if (name === undefined) throw new ConfigError("actions test: name the action: `qwen-edge actions test NAME --args JSON`");
    if (!actions.some((a) => a.name === name)) {
        throw new ConfigError(`actions test: no action named "${name}"` +
            (actions.length === 0 ? "; no actions are configured (did you pass --config?)" : `; configured: ${actions.map((a) => a.name).join(", ")}`));
    }
    let callArgs: unknown = {};
    if (typeof flags.args === "string") {
        try {
            callArgs = JSON.parse(flags.args) as unknown;
        } catch {
            throw new ConfigError("actions test: --args must be a JSON object, e.g. --args '{\"room\": \"kitchen\"}'");
        }
    }
    const layout = topicLayout(config.mqtt.baseTopic, config.device.id, config.mqtt.fleetGroup);
    const policy = replyPolicy({base: config.mqtt.baseTopic, response: layout.response, discoveryPrefix: config.telemetry.discoveryPrefix, routes, allow: []});
    const executor = new ActionExecutor({log: createLogger("error", process.stderr), actions, device: config.device.id, policy,
        publish: () => Promise.reject(new Error("actions test never publishes"))});
    const r = executor.preview(name, callArgs);
    const lines = [`action   ${name}`, `status   ${r.status === "published" ? "would publish" : r.status}`];
    if (r.topic !== undefined) lines.push(`topic    ${r.topic}`);
    if (r.payload !== undefined) lines.push(`payload  ${r.payload}`, `qos      ${r.qos}`, `retain   ${r.retain ? "yes" : "no"}`);
    if (r.reason !== undefined) lines.push(`reason   ${r.reason}`);
    const grantedBy = routes.filter((route) => route.actions?.includes(name)).map((route) => route.name);
    lines.push(`granted  by requests that list it in "actions"${grantedBy.length > 0 ? `, and by the routes ${grantedBy.join(", ")}` : ""}`);
    process.stdout.write(`${lines.join("\n")}\n`);
    return r.status === "published" ? EXIT.ok : EXIT.failure;
}

function listActions(actions: readonly Action[], routes: ReadonlyArray<{name: string; actions: string[]}>): string {
    const rows = [["NAME", "PARAMETERS", "TOPIC", "QOS", "RETAIN", "PER MINUTE", "GRANTED BY ROUTES"]];
    for (const a of actions) {
        const props = Object.keys((a.parameters.properties as Record<string, unknown> | undefined) ?? {});
        const required = new Set((a.parameters.required as string[] | undefined) ?? []);
        rows.push([a.name, props.length === 0 ? "-" : props.map((p) => required.has(p) ? p : `${p}?`).join(", "), a.topic.source, String(a.qos),
            a.retain ? "yes" : "no", String(a.maxPerMinute), routes.filter((r) => r.actions.includes(a.name)).map((r) => r.name).join(", ") || "-"]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    return `${rows.map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i]!)).join("  ")).join("\n")}\n`;
}
