/**
 * Configuration: one convict schema. Every key has a doc, a format, a default, an environment
 * variable (QWEN_EDGE_SECTION_KEY) and a CLI argument (--section-key), both derived from its path so
 * none can be forgotten. Precedence: argument > environment > YAML file (--config) > default.
 */
import {readFileSync} from "node:fs";
import {homedir, hostname} from "node:os";
import {join} from "node:path";
import convict from "convict";
import YAML from "yaml";
import {ConfigError} from "./errors.js";
import {QUANTIZATIONS, isQuantization} from "./models/catalog.js";
import {parseSize} from "./util/size.js";
import {sanitizeDeviceId, topicLayout, validateTopicFilter} from "./mqtt/topics.js";
import {compileRoutes, deviceRouteProblems, routesFromJson} from "./routes/route.js";
import {compileActions} from "./actions/action.js";
import {passwordNotAccepted} from "./mqtt/credentials.js";
import {configSchema, type QwenEdgeConfigShape, type SchemaNode} from "./config-schema.js";

convict.addParser({extension: ["yml", "yaml"], parse: (text: string): unknown => withoutEmptySections(YAML.parse(text) as unknown)});
convict.addParser({extension: "json", parse: (text: string): unknown => JSON.parse(text) as unknown});
// A list of mappings, checked as a whole so every message names routes[i].field; JSON from env/args.
// Sizes may be written as "512MiB", "1.5GB" or bytes; stored as bytes.
convict.addFormat({name: "size", coerce: (v: unknown) => typeof v === "string" ? parseSize(v) : v, validate: (value: unknown): void => {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw new Error("must be a size in bytes or like 512MiB, 2GiB");
}});
convict.addFormat({name: "quantList", coerce: (v: unknown) => typeof v === "string" ? v.split(",").map((q) => q.trim()) : v, validate: (value: unknown): void => {
    if (!Array.isArray(value) || value.length === 0 || !value.every((q) => typeof q === "string" && isQuantization(q)))
        throw new Error(`must be a non-empty list of ${QUANTIZATIONS.join(", ")}`);
}});
// A list of topic filters; from the environment or an argument, comma-separated.
convict.addFormat({name: "topicFilterList", coerce: (v: unknown) => typeof v === "string" ? v.split(",").map((f) => f.trim()).filter((f) => f !== "") : v,
    validate: (value: unknown): void => {
        if (!Array.isArray(value)) throw new Error("must be a list of MQTT topic filters, e.g. [replies/#]");
        for (const filter of value as unknown[]) {
            if (typeof filter !== "string") throw new Error("must be a list of MQTT topic filters (strings)");
            const problem = filter.startsWith("$share/") ? "is a shared subscription, which is not a place to publish" : validateTopicFilter(filter);
            if (problem !== null) throw new Error(`${JSON.stringify(filter)} ${problem}`);
        }
    }});
convict.addFormat({name: "routes", coerce: routesFromJson, validate: (value: unknown): void => {
    const {problems} = compileRoutes(value);
    if (problems.length > 0) throw new Error(problems.join("\n"));
}});

convict.addFormat({name: "actions", coerce: (text: string): unknown => {
    try {
        return JSON.parse(text) as unknown;
    } catch {
        throw new Error("actions: as an environment variable or argument, actions must be a JSON list (this is not valid JSON); they are easier to write in the YAML file");
    }
}, validate: (value: unknown): void => {
    const {problems} = compileActions(value);
    if (problems.length > 0) throw new Error(problems.join("\n"));
}});

export type QwenEdgeConfig = QwenEdgeConfigShape;

/**
 * `mqtt:` with every key below it commented out (as in the generated example) parses as
 * `mqtt: null`, which convict would take as "replace the whole section". An empty file parses as
 * null. Both mean "nothing set here".
 */
function withoutEmptySections(parsed: unknown): unknown {
    if (parsed === null || parsed === undefined) return {};
    if (typeof parsed !== "object" || Array.isArray(parsed)) return parsed;
    return Object.fromEntries(Object.entries(parsed as Record<string, unknown>).filter(([, value]) => value !== null));
}

/** `inference.maxQueue` -> `QWEN_EDGE_INFERENCE_MAX_QUEUE` and `inference-max-queue`. */
export function envNameFor(path: string): string {
    return "QWEN_EDGE_" + path.replace(/\./g, "_").replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}
export function argNameFor(path: string): string {
    return path.replace(/\./g, "-").replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

/** Walks the schema and gives every leaf its env and arg names. */
function withNames(node: Record<string, unknown>, prefix = ""): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) {
        const path = prefix ? `${prefix}.${key}` : key;
        if (isLeaf(value)) out[key] = {...value, env: envNameFor(path), arg: argNameFor(path)};
        else out[key] = withNames(value as Record<string, unknown>, path);
    }
    return out;
}

function isLeaf(value: unknown): value is SchemaNode {
    return typeof value === "object" && value !== null && "doc" in value && "default" in value;
}

export interface LoadConfigOptions {
    /** CLI arguments after the subcommand, e.g. ["--config", "x.yaml", "--inference-threads", "1"] */
    args?: string[];
    /** default process.env */
    env?: NodeJS.ProcessEnv;
}

/** Every `--flag` the schema knows, for rejecting unknown ones (convict ignores them silently). */
export function knownArgs(): Set<string> {
    const names = new Set<string>();
    const walk = (node: Record<string, unknown>, prefix: string): void => {
        for (const [key, value] of Object.entries(node)) {
            const path = prefix ? `${prefix}.${key}` : key;
            if (isLeaf(value)) names.add(argNameFor(path));
            else walk(value as Record<string, unknown>, path);
        }
    };
    walk(configSchema, "");
    return names;
}

/** Loads, validates strictly and post-processes the configuration. Throws ConfigError. */
export function loadConfig(options: LoadConfigOptions = {}): QwenEdgeConfig {
    const env = options.env ?? process.env;
    const args = options.args ?? [];
    // Would be silently ignored (no such key): refuse it, and say where a password goes instead.
    if (env.QWEN_EDGE_MQTT_PASSWORD !== undefined) throw passwordNotAccepted("QWEN_EDGE_MQTT_PASSWORD");
    const schema = withNames(configSchema);
    const configFile = flagValue(args, "config") ?? env.QWEN_EDGE_CONFIG;
    // Boolean flags given bare (`--model-download`) are turned into `--model-download true` for convict.
    const convictArgs = normalizeArgs(args);
    let conf;
    try {
        conf = convict(schema as never, {args: convictArgs, env});
        if (configFile) {
            try {
                readFileSync(configFile);
            } catch (err) {
                throw new ConfigError(`cannot read config file ${configFile}: ${(err as Error).message}`);
            }
            conf.loadFile(configFile);
        }
        conf.validate({allowed: "strict"});
    } catch (err) {
        if (err instanceof ConfigError) throw err;
        throw new ConfigError(rewordConvictError((err as Error).message, configFile));
    }
    const props = conf.getProperties() as QwenEdgeConfig;
    return resolveDefaults(props, env);
}

/** Fills the defaults that depend on the machine (device id, directories, threads). */
function resolveDefaults(config: QwenEdgeConfig, env: NodeJS.ProcessEnv): QwenEdgeConfig {
    const c = structuredClone(config);
    if (c.device.id === "") c.device.id = sanitizeDeviceId(hostname());
    else if (sanitizeDeviceId(c.device.id) !== c.device.id)
        throw new ConfigError(`device.id: "${c.device.id}" may only contain a-z, 0-9, "_" and "-" (try "${sanitizeDeviceId(c.device.id)}")`);
    if (c.mqtt.clientId === "") c.mqtt.clientId = `qwen-edge-${c.device.id}`;
    // systemd hands us its managed directories (StateDirectory=, CacheDirectory=) in these variables.
    const xdgState = env.XDG_STATE_HOME ?? join(homedir(), ".local", "state");
    const xdgCache = env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
    if (c.state.dir === "") c.state.dir = env.STATE_DIRECTORY?.split(":")[0] ?? join(xdgState, "qwen-edge");
    if (c.model.dir === "") c.model.dir = env.CACHE_DIRECTORY ? join(env.CACHE_DIRECTORY.split(":")[0] ?? "", "models") : join(xdgCache, "qwen-edge", "models");
    if (c.inference.defaultMaxTokens > c.inference.maxTokensCap)
        throw new ConfigError(`inference.defaultMaxTokens (${c.inference.defaultMaxTokens}) must not exceed inference.maxTokensCap (${c.inference.maxTokensCap})`);
    if (c.inference.defaultTimeoutMs > c.inference.maxTimeoutMs)
        throw new ConfigError(`inference.defaultTimeoutMs (${c.inference.defaultTimeoutMs}) must not exceed inference.maxTimeoutMs (${c.inference.maxTimeoutMs})`);
    const actionNames = new Set(compileActions(c.actions).actions.map((a) => a.name));
    const grants = compileRoutes(c.routes).routes.flatMap((r, i) => (r.actions ?? []).filter((a) => !actionNames.has(a))
        .map((a) => `routes[${i}] (${r.name}).actions names ${JSON.stringify(a)}, which is not a configured action (configured: ${[...actionNames].join(", ") || "none"})`));
    if (grants.length > 0) throw new ConfigError(grants.join("\n"));
    if (c.routes.length > 0) {
        const problems = deviceRouteProblems(compileRoutes(c.routes).routes, topicLayout(c.mqtt.baseTopic, c.device.id, c.mqtt.fleetGroup), c.inference,
            {discoveryPrefix: c.telemetry.discoveryPrefix, allow: c.mqtt.replyTopics});
        if (problems.length > 0) throw new ConfigError(problems.join("\n"));
    }
    return c;
}

function flagValue(args: string[], name: string): string | undefined {
    for (let i = 0; i < args.length; i++) {
        const a = args[i];
        if (a === `--${name}`) return args[i + 1];
        if (a?.startsWith(`--${name}=`)) return a.slice(name.length + 3);
    }
    return undefined;
}

function normalizeArgs(args: string[]): string[] {
    const out: string[] = [];
    for (let i = 0; i < args.length; i++) {
        const a = args[i] ?? "";
        out.push(a);
        const next = args[i + 1];
        if (a.startsWith("--") && !a.includes("=") && (next === undefined || next.startsWith("--"))) out.push("true");
    }
    return out;
}

/** convict's messages name the key but read like stack traces; make them one line per problem. */
function rewordConvictError(message: string, configFile: string | undefined): string {
    const lines = message.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
        const unknown = /^configuration param '(.+)' not declared in the schema$/.exec(line);
        if (unknown?.[1] === "mqtt.password") return passwordNotAccepted(`mqtt.password${configFile ? ` in ${configFile}` : ""}`,
            "the configuration file is no place for a password (under systemd every local user can read it)").message;
        if (unknown) return `${unknown[1]}: unknown key${configFile ? ` in ${configFile}` : ""} (see \`qwen-edge config --example\` for every key)`;
        // Route problems name routes[i].field themselves; convict's dump of the whole list would bury them.
        if (line.startsWith("routes")) return line.replace(/^routes: (?=routes)/, "").replace(/: value was .*$/, "");
        if (line.startsWith("actions")) return line.replace(/^actions: (?=actions)/, "").replace(/: value was .*$/, "");
        return line.replace(/^([\w.]+): /, "$1: ");
    });
    return lines.join("\n");
}

/** The configuration with secrets removed, for logs and the retained `info` topic. */
export function redactedConfig(config: QwenEdgeConfig): Record<string, unknown> {
    const c = structuredClone(config) as unknown as {mqtt: Record<string, unknown>; model: Record<string, unknown>};
    if (c.mqtt.username) c.mqtt.username = "[set]";
    if (c.model.hfToken) c.model.hfToken = "[redacted]";
    return c;
}
