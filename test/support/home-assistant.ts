/**
 * Home Assistant's side of MQTT device discovery, as far as the tests need it, written from Home
 * Assistant's own source (home-assistant/core, homeassistant/components/mqtt):
 * - schemas.py DEVICE_DISCOVERY_SCHEMA: `dev`/`device` with at least one identifier (`ids`) and only
 *   the device keys of abbreviations.py DEVICE_ABBREVIATIONS; `o`/`origin` with a `name` and only
 *   `sw`/`sw_version` and `url`/`support_url` (a configuration URL: http or https); `cmps`/`components`,
 *   each with a `p`/`platform` Home Assistant supports;
 * - the state an entity takes from a message: the `value_template` rendered by Jinja2 (Home
 *   Assistant's template engine; its sandbox, and its `round` that gives an int at precision 0) with
 *   `value` and `value_json`, then sensor.py (a numeric sensor: "None" is unknown, "" is ignored)
 *   and binary_sensor.py (payload_on, payload_off, "None" is unknown, anything else is ignored).
 * Rendering needs python3 with jinja2 (Debian: python3-jinja2; .ci/run installs it).
 */
import {spawnSync} from "node:child_process";

const DEVICE_KEYS = new Set(["cns", "connections", "cu", "configuration_url", "hw", "hw_version", "ids", "identifiers", "name",
    "mf", "manufacturer", "mdl", "model", "mdl_id", "model_id", "sa", "suggested_area", "sn", "serial_number", "sw", "sw_version",
    "via_device"]);
const ORIGIN_KEYS = new Set(["name", "sw", "sw_version", "url", "support_url"]);
const TOP_LEVEL_KEYS = new Set(["dev", "device", "o", "origin", "cmps", "components", "avty", "availability", "avty_mode",
    "availability_mode", "avty_t", "availability_topic", "avty_tpl", "availability_template", "pl_avail", "payload_available",
    "pl_not_avail", "payload_not_available", "stat_t", "state_topic", "cmd_t", "command_topic", "qos", "encoding"]);
/** SUPPORTED_COMPONENTS of const.py that a read-only device could use. */
const PLATFORMS = new Set(["binary_sensor", "button", "event", "image", "number", "select", "sensor", "switch", "text", "update"]);

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const pick = (o: Obj, short: string, long: string): unknown => o[short] ?? o[long];
/** A string field as Home Assistant's cv.string would read it; "" for what is not a string or number. */
const text = (v: unknown): string => (typeof v === "string" || typeof v === "number" ? String(v) : "");

/** Every way the payload breaks DEVICE_DISCOVERY_SCHEMA; an empty list when Home Assistant would take it. */
export function discoveryProblems(payload: unknown): string[] {
    const problems: string[] = [];
    if (!isObj(payload)) return ["the payload is not a JSON object"];
    for (const key of Object.keys(payload)) if (!TOP_LEVEL_KEYS.has(key)) problems.push(`unknown top-level key ${key}`);
    const dev = pick(payload, "dev", "device");
    if (!isObj(dev)) problems.push("device (dev) is required");
    else {
        for (const key of Object.keys(dev)) if (!DEVICE_KEYS.has(key)) problems.push(`unknown device key ${key}`);
        const ids = pick(dev, "ids", "identifiers");
        const list = Array.isArray(ids) ? ids : ids === undefined ? [] : [ids];
        if (list.length === 0 && pick(dev, "cns", "connections") === undefined) problems.push("the device needs an identifier (ids)");
        for (const [key, value] of Object.entries(dev)) if (key !== "ids" && key !== "cns" && typeof value !== "string") problems.push(`device ${key} is not a string`);
        const cu = pick(dev, "cu", "configuration_url");
        if (cu !== undefined && !/^https?:\/\/\S+$/.test(text(cu))) problems.push("device configuration_url is not an http(s) URL");
    }
    const origin = pick(payload, "o", "origin");
    if (!isObj(origin)) problems.push("origin (o) is required");
    else {
        for (const key of Object.keys(origin)) if (!ORIGIN_KEYS.has(key)) problems.push(`unknown origin key ${key}`);
        if (typeof origin.name !== "string" || origin.name === "") problems.push("the origin needs a name");
        const url = pick(origin, "url", "support_url");
        if (url !== undefined && !/^https?:\/\/\S+$/.test(text(url))) problems.push("origin support_url is not an http(s) URL");
    }
    const cmps = pick(payload, "cmps", "components");
    if (!isObj(cmps)) problems.push("components (cmps) are required");
    else {
        for (const [id, c] of Object.entries(cmps)) {
            if (!isObj(c)) { problems.push(`component ${id} is not an object`); continue; }
            const platform = pick(c, "p", "platform");
            if (typeof platform !== "string" || !PLATFORMS.has(platform)) problems.push(`component ${id}: platform ${String(platform)} is not supported`);
            if (typeof pick(c, "uniq_id", "unique_id") !== "string") problems.push(`component ${id}: no unique_id (needed for a device's entity)`);
        }
    }
    return problems;
}

/** Why templates cannot be rendered here, or false when they can. */
export const jinjaMissing: string | false = spawnSync("python3", ["-c", "import jinja2"]).status === 0
    ? false : "python3 with jinja2 is not installed (apt-get install python3-jinja2)";

const RENDER = `
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment()
def ha_round(value, precision=0, method="common"):
    value = round(float(value), precision)
    return int(value) if precision == 0 else value
env.filters["round"] = ha_round
out = {}
for item in json.load(sys.stdin):
    try:
        value_json = json.loads(item["payload"])
    except ValueError:
        value_json = None
    try:
        out[item["key"]] = str(env.from_string(item["template"]).render(value=item["payload"], value_json=value_json)).strip()
    except Exception as e:
        out[item["key"]] = {"error": repr(e)}
print(json.dumps(out))
`;

/** What an entity shows: its state, "unknown", or "ignored" (the message left the previous state). */
export type EntityState = string;

/**
 * The state every component takes from the latest message on its state topic (`messages`: topic ->
 * payload); components whose topic has no message are left out. Throws on a template error.
 */
export function entityStates(payload: {cmps: Record<string, Obj>}, messages: Record<string, string>): Record<string, EntityState> {
    const items = Object.entries(payload.cmps).filter(([, c]) => messages[String(c.state_topic)] !== undefined)
        .map(([key, c]) => ({key, template: text(c.value_template) || "{{ value }}", payload: messages[String(c.state_topic)]!}));
    const r = spawnSync("python3", ["-c", RENDER], {input: JSON.stringify(items), encoding: "utf8"});
    if (r.status !== 0) throw new Error(`rendering failed: ${r.stderr}`);
    const rendered = JSON.parse(r.stdout) as Record<string, string | {error: string}>;
    const states: Record<string, EntityState> = {};
    for (const [key, value] of Object.entries(rendered)) {
        if (typeof value !== "string") throw new Error(`${key}: template error ${value.error}`);
        states[key] = stateOf(payload.cmps[key]!, value);
    }
    return states;
}

function stateOf(c: Obj, rendered: string): EntityState {
    if (c.p === "binary_sensor") {
        if (rendered === "") return "ignored";
        if (rendered === (text(c.payload_on) || "ON")) return "on";
        if (rendered === (text(c.payload_off) || "OFF")) return "off";
        return rendered === "None" ? "unknown" : "ignored";
    }
    const numeric = c.unit_of_measurement !== undefined || c.state_class !== undefined;
    if (numeric) {
        if (rendered === "") return "ignored";
        if (rendered === "None") return "unknown";
        if (!Number.isFinite(Number(rendered))) throw new Error(`numeric sensor ${String(c.name)} got "${rendered}" (Home Assistant raises ValueError)`);
        return rendered;
    }
    if (c.device_class === "enum" && !(c.options as string[] | undefined)?.includes(rendered))
        throw new Error(`enum sensor ${String(c.name)} got "${rendered}", not one of its options`);
    return rendered;
}
