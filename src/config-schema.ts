/**
 * The configuration schema: every key, its doc, format and default. Environment variable and CLI
 * argument names are derived from the path in config.ts. `qwen-edge config --example` renders this
 * as deploy/config.example.yaml.
 */
import type convict from "convict";
// Types only (erased at run time): the schema depends on no module's code.
import type {ActionConfig} from "./actions/action.js";
import type {LogFormat} from "./log.js";
import type {ModelVariant, Quantization} from "./models/catalog.js";
import type {ThinkingSetting} from "./mqtt/request-fields.js";

export type LogLevel = "error" | "warn" | "info" | "debug";

export interface QwenEdgeConfigShape {
    device: {id: string};
    mqtt: {
        url: string; baseTopic: string; clientId: string; fleetGroup: string;
        username: string; passwordFile: string; ca: string; cert: string; key: string;
        keepaliveSeconds: number; sessionExpirySeconds: number; connectTimeoutMs: number;
        reconnectMinMs: number; reconnectMaxMs: number; replyTopics: string[];
    };
    model: {
        path: string; dir: string; variant: "auto" | ModelVariant; quants: Quantization[]; repository: string;
        download: boolean; reserveBytes: number; hfToken: string; hfEndpoint: string; mmap: boolean;
    };
    inference: {
        threads: number; contextSize: number; batchSize: number; parallel: number; maxQueue: number;
        maxTokensCap: number; defaultMaxTokens: number; defaultTimeoutMs: number; maxTimeoutMs: number;
        maxPayloadBytes: number; systemPrompt: string; temperature: number; topP: number; topK: number;
        presencePenalty: number; streamIntervalMs: number; promptCheckpoints: number;
    };
    conversations: {maxCount: number; idleMinutes: number; maxTotalTokens: number};
    state: {dir: string};
    shutdown: {drainMs: number};
    log: {level: LogLevel; format: LogFormat};
    telemetry: {
        intervalSeconds: number; retainHealth: boolean; homeAssistant: boolean; discoveryPrefix: string;
        metricsPort: number; metricsHost: string; maxTemperatureC: number; coolDownC: number; pauseWhenHot: boolean;
        lowMemoryBytes: number; throttleCommandIntervalSeconds: number;
    };
    routes: RouteConfig[];
    actions: ActionConfig[];
}

/** A value a route filter compares with (`equals`, `in`). */
export type FilterValue = string | number | boolean | null;

/** One condition on the payload (or on the JSON value at `path`); every operator given must hold. */
export interface FilterConfig {
    /** dot path into a JSON payload, e.g. "action" or "sensors.0.value"; absent: the whole payload */
    path?: string;
    equals?: FilterValue;
    in?: FilterValue[];
    /** a regular expression the (string) value must match */
    matches?: string;
    /** numeric: the value must be greater than this */
    above?: number;
    /** numeric: the value must be less than this */
    below?: number;
}

export interface RouteConfig {
    name: string;
    /** MQTT topic filter to subscribe; "+" and "#" allowed */
    topic: string;
    /** how the payload is read; default "text" */
    payload?: "text" | "json";
    /** what to do with a payload the route cannot read; default "drop" (logged and counted) */
    onInvalid?: "drop" | "reply-error";
    /** one condition or a list (all must hold); messages that fail it are dropped and counted */
    filter?: FilterConfig | FilterConfig[];
    /** at most one request per source topic per this many ms; default 0 (no limit) */
    minIntervalMs?: number;
    /** at most this many requests per rolling minute for the whole route; 0: no limit; default 30 */
    maxPerMinute?: number;
    prompt: string;
    system?: string;
    /** a template naming the conversation each message continues, e.g. "{{topic.1}}" (docs/ROUTES.md) */
    conversation?: string;
    /** device actions granted to this route's requests, by name (docs/ACTIONS.md) */
    actions?: string[];
    maxTokens?: number;
    timeoutMs?: number;
    jsonSchema?: Record<string, unknown>;
    thinking?: ThinkingSetting;
    reply: {
        topic: string;
        /** "text": the answer alone (default); "json": the whole reply object, errors too */
        format?: "text" | "json";
        /** default false */
        retain?: boolean;
        /** default 1 */
        qos?: 0 | 1 | 2;
        /** with retain: distinct reply topics the route may leave a retained answer on; default 32 */
        maxRetainedTopics?: number;
    };
}

/** Each section's type, for the parts that read only their own (the models/ slices, for one). */
export type ModelConfig = QwenEdgeConfigShape["model"];
export type InferenceConfig = QwenEdgeConfigShape["inference"];

export interface SchemaNode {
    doc: string;
    format: unknown;
    default: unknown;
    sensitive?: boolean;
    nullable?: boolean;
}

const levels: LogLevel[] = ["error", "warn", "info", "debug"];

export const configSchema: convict.Schema<QwenEdgeConfigShape> = {
    device: {
        id: {doc: "This device's id in MQTT topics (a-z, 0-9, _ and -). Empty: the sanitized hostname.", format: String, default: ""}
    },
    mqtt: {
        url: {doc: "Broker URL: mqtt://host:1883 or mqtts://host:8883 (TLS).", format: (v: unknown) => assertUrl(v, ["mqtt:", "mqtts:", "tcp:", "ssl:", "ws:", "wss:"]), default: "mqtt://127.0.0.1:1883"},
        baseTopic: {doc: "First level of every qwen-edge topic.", format: String, default: "qwen-edge"},
        clientId: {doc: "MQTT client id; fixed so the broker keeps our session. Empty: qwen-edge-{device.id}.", format: String, default: ""},
        fleetGroup: {doc: "Shared-subscription group for the fleet queue $share/{group}/{base}/fleet/request. Empty disables it.", format: String, default: "qwen-edge"},
        username: {doc: "Broker username (empty: none).", format: String, default: ""},
        passwordFile: {doc: "File holding the broker password (never pass a password on the command line). Under systemd the credential 'mqtt-password' is used when this is empty.", format: String, default: ""},
        ca: {doc: "PEM file of the CA that signed the broker's certificate (mqtts).", format: String, default: ""},
        cert: {doc: "PEM client certificate for mutual TLS (with mqtt.key).", format: String, default: ""},
        key: {doc: "PEM private key of the client certificate.", format: String, default: ""},
        keepaliveSeconds: {doc: "MQTT keepalive; a dead connection is noticed within 1.5x this.", format: "nat", default: 30},
        sessionExpirySeconds: {doc: "How long the broker keeps our session (and queued QoS 1 requests) while we are away.", format: "nat", default: 86400},
        connectTimeoutMs: {doc: "Time allowed for one connection attempt.", format: "nat", default: 10000},
        reconnectMinMs: {doc: "First reconnect delay; doubles per failed attempt up to mqtt.reconnectMaxMs.", format: "nat", default: 1000},
        reconnectMaxMs: {doc: "Longest reconnect delay.", format: "nat", default: 60000},
        replyTopics: {doc: "Topic filters a reply may be published on (a request's Response Topic or replyTo, a route's reply topic), e.g. [replies/#]. Empty: any topic the reply policy does not forbid (the device's own and Home Assistant's topics, request, cancel and route input topics). The device's response topic is always allowed. Keep it in step with the broker's ACL (deploy/mosquitto/). As an environment variable or argument: comma-separated.", format: "topicFilterList", default: []}
    },
    model: {
        path: {doc: "Path of a GGUF to load. Set it to skip the memory-based choice.", format: String, default: ""},
        dir: {doc: "Where models are kept (and downloaded to). Empty: $CACHE_DIRECTORY/models under systemd, else ~/.cache/qwen-edge/models.", format: String, default: ""},
        variant: {doc: "Which Qwen3.5 size: auto picks the largest that fits in memory.", format: ["auto", "0.8b", "2b", "4b", "9b"], default: "auto"},
        quants: {doc: "Quantizations to consider, most preferred first (Q4_K_M, Q8_0); e.g. [Q8_0, Q4_K_M] takes Q8_0 where it fits.", format: "quantList", default: ["Q4_K_M"]},
        repository: {doc: "Hugging Face repository pattern; {size} is replaced by 0.8B, 2B, 4B or 9B.", format: String, default: "unsloth/Qwen3.5-{size}-GGUF"},
        download: {doc: "Download the chosen model when it is not in model.dir.", format: Boolean, default: true},
        reserveBytes: {doc: "Memory kept free for the OS and everything else when choosing a model: bytes or a size like 512MiB; 0 = 5% of the memory, 64 MiB to 512 MiB.", format: "size", default: 0},
        hfToken: {doc: "Hugging Face token for gated downloads (or HF_TOKEN).", format: String, default: "", sensitive: true},
        hfEndpoint: {doc: "Hugging Face endpoint for downloads and remote headers (a mirror). Empty: $HF_ENDPOINT or https://huggingface.co/.", format: String, default: ""},
        mmap: {doc: "Map the model file instead of reading it into memory. Off: llama.cpp copies most weights into a layout for this CPU (x86 AVX2, ARM dotprod), and a mapping would keep the original pages resident too (docs/MEMORY.md).", format: Boolean, default: false}
    },
    inference: {
        threads: {doc: "CPU threads for generation. 0: every CPU available to this process (affinity, cgroup quota), at most the physical cores (docs/ENGINE-SPEED.md).", format: "nat", default: 0},
        contextSize: {doc: "Context size in tokens of each parallel sequence (prompt + answer; never the model's 262k).", format: "nat", default: 4096},
        batchSize: {doc: "Prompt batch size; the compute buffer grows with n_vocab x batch, keep it small on small devices.", format: "nat", default: 128},
        parallel: {doc: "Requests generated at the same time (sequences of one context).", format: "nat", default: 1},
        promptCheckpoints: {doc: "Prompt reuse: evaluated-prompt checkpoints each sequence keeps, so a request that starts like an earlier one (same system prompt, same history) evaluates only what is new. Each holds the model's recurrent state (19 MiB for 0.8B/2B, ~50 MiB for 4B/9B) and counts in the memory plan; 0 turns reuse off (docs/PROMPT-REUSE.md).", format: "nat", default: 3},
        maxQueue: {doc: "Accepted requests waiting for a slot; more are refused with queue_full.", format: "nat", default: 32},
        maxTokensCap: {doc: "Largest maxTokens a request may ask for.", format: "nat", default: 2048},
        defaultMaxTokens: {doc: "maxTokens when a request gives none.", format: "nat", default: 256},
        defaultTimeoutMs: {doc: "Deadline of a request (queue + generation) when it gives no timeoutMs.", format: "nat", default: 120000},
        maxTimeoutMs: {doc: "Largest timeoutMs a request may ask for.", format: "nat", default: 600000},
        maxPayloadBytes: {doc: "Largest request payload accepted (bytes).", format: "nat", default: 65536},
        systemPrompt: {doc: "System prompt used when a request gives none.", format: String, default: "You are a helpful assistant running on a small edge device. Answer briefly and precisely."},
        temperature: {doc: "Default sampling temperature (0 = greedy). Qwen's card: 0.7 without thinking.", format: Number, default: 0.7},
        topP: {doc: "Default top-p.", format: Number, default: 0.8},
        topK: {doc: "Default top-k.", format: "nat", default: 20},
        presencePenalty: {doc: "Presence penalty (Qwen's card recommends 1.5; 0 disables).", format: Number, default: 1.5},
        streamIntervalMs: {doc: "Streamed chunks are coalesced over this many milliseconds.", format: "nat", default: 50}
    },
    conversations: {
        maxCount: {doc: "Conversations kept (a request's `conversation`; per reply topic); past this the least recently used is forgotten. 0: conversations are refused.", format: "nat", default: 64},
        idleMinutes: {doc: "A conversation unused this long is forgotten.", format: "nat", default: 1440},
        maxTotalTokens: {doc: "History tokens all conversations hold together; past this the least recently used are forgotten (kept as text in the state directory, ~4 bytes a token).", format: "nat", default: 262144}
    },
    state: {
        dir: {doc: "Where the job journal and conversations live. Empty: $STATE_DIRECTORY under systemd, else ~/.local/state/qwen-edge.", format: String, default: ""}
    },
    shutdown: {
        drainMs: {doc: "On SIGTERM, how long running generations may finish before they are stopped and kept for the next start.", format: "nat", default: 10000}
    },
    log: {
        level: {doc: "Log level; debug adds the configuration, every plan candidate and the stack of expected errors.", format: levels, default: "info"},
        format: {doc: "pretty: one readable line per event (time, level, message, fields); json: one JSON object per line (journald, log shippers); auto: pretty on a terminal, else json.", format: ["pretty", "json", "auto"], default: "auto"}
    },
    telemetry: {
        intervalSeconds: {doc: "Seconds between health messages on {base}/{device}/health (at least 1; each expires after twice this).", format: "nat", default: 30},
        retainHealth: {doc: "Publish health retained (with the expiry), so a dashboard or `qwen-edge status` sees the latest at once and a stale one disappears.", format: Boolean, default: true},
        homeAssistant: {doc: "Announce the device to Home Assistant by MQTT device discovery. Turning it off stops announcing; `qwen-edge homeassistant remove` deletes the device.", format: Boolean, default: false},
        discoveryPrefix: {doc: "Home Assistant's discovery prefix (its birth messages are on {prefix}/status).", format: String, default: "homeassistant"},
        metricsPort: {doc: "TCP port serving Prometheus metrics at /metrics; 0 disables it.", format: "port", default: 0},
        metricsHost: {doc: "Address the metrics port binds to; keep 127.0.0.1 unless a scraper on another host needs it.", format: String, default: "127.0.0.1"},
        maxTemperatureC: {doc: "At or above this temperature (hottest thermal zone, °C) the status is degraded.", format: Number, default: 80},
        coolDownC: {doc: "Hysteresis: the device counts as hot until it is this many °C below telemetry.maxTemperatureC.", format: Number, default: 5},
        pauseWhenHot: {doc: "While hot or throttled, leave new requests queued (running ones finish) until it cools.", format: Boolean, default: false},
        lowMemoryBytes: {doc: "Below this much memory headroom (MemAvailable or the cgroup's) the status is degraded; 0 disables.", format: "nat", default: 64 * 1024 * 1024},
        throttleCommandIntervalSeconds: {doc: "Where the kernel has no get_throttled file, `vcgencmd get_throttled` runs at most this often (spawning blocks the event loop for milliseconds).", format: "nat", default: 300}
    },
    routes: {
        doc: "Prompt routes: answer other devices' messages on their own topics (see docs/ROUTES.md). A list, best written in this file; as an environment variable or argument it is JSON.",
        // The "routes" format is registered in config.ts: checked by compileRoutes, read as JSON from env/args.
        format: "routes", default: []
    },
    actions: {
        doc: "Device actions: tools the model may call that the device runs itself by publishing one MQTT message, only when a request or route grants them by name (see docs/ACTIONS.md). A list, best written in this file; as an environment variable or argument it is JSON.",
        // The "actions" format is registered in config.ts: checked by compileActions, read as JSON from env/args.
        format: "actions", default: []
    }
};

function assertUrl(value: unknown, protocols: string[]): void {
    if (typeof value !== "string") throw new Error("must be a URL string");
    let url: URL;
    try {
        url = new URL(value);
    } catch {
        throw new Error(`must be a URL like mqtt://host:1883 (got "${value}")`);
    }
    if (!protocols.includes(url.protocol)) throw new Error(`must use one of ${protocols.map((p) => p.replace(":", "://")).join(", ")} (got "${url.protocol}//")`);
    if (url.password) throw new Error("must not contain a password: use mqtt.passwordFile");
}
