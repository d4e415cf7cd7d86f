/**
 * Home Assistant MQTT device discovery (opt-in, `telemetry.homeAssistant`): one retained message on
 * `{prefix}/device/{device}/config` declares the device, its origin, its availability (our status
 * topic) and its sensors, all reading the topics qwen-edge already publishes. It is published on
 * every connect and again whenever Home Assistant announces itself (`{prefix}/status` = `online`),
 * since a Home Assistant that restarted without the retained message would not know the device.
 *
 * Removal is explicit: `qwen-edge homeassistant remove --device ID` publishes the empty retained
 * payload that makes Home Assistant delete the device. Turning the option off only stops announcing
 * (a daemon cannot tell "never enabled" from "enabled on a previous run").
 *
 * Keys follow Home Assistant's device-discovery schema: `dev` (device, needs `ids`), `o` (origin,
 * needs `name`), `cmps` (components, each needs `p` = platform and a `unique_id`).
 *
 * Entities tell the truth: a sensor the host lacks gets no entity (no thermal zone, no Temperature);
 * a value the host cannot tell right now renders as `None`, which Home Assistant's MQTT sensor and
 * binary sensor take as unknown (homeassistant/components/mqtt/sensor.py, binary_sensor.py:
 * PAYLOAD_NONE) instead of a made-up 0 or OFF.
 */
import type {DeviceState} from "./status.js";
import {DEVICE_STATES} from "./status.js";

export interface DiscoveryInput {
    device: string;
    prefix: string;
    topics: {status: string; info: string; health: string};
    version: string;
    /** what the device is: the board ("Raspberry Pi 4 Model B Rev 1.4"), else the CPU model; null when neither is known */
    model: string | null;
    /** the board's maker ("Raspberry Pi Ltd"); null when unknown */
    manufacturer: string | null;
    /** the host has a thermal zone to read: without one there is no Temperature entity */
    temperature: boolean;
    /** the project's URL (package.json `homepage`), shown as the origin's support URL; null leaves it out */
    supportUrl: string | null;
    intervalSeconds: number;
}

export interface DiscoveryComponent {
    p: "sensor" | "binary_sensor";
    name: string;
    unique_id: string;
    state_topic: string;
    value_template: string;
    [key: string]: unknown;
}

export interface DiscoveryPayload {
    dev: {ids: string[]; name: string; sw: string; mdl?: string; mf?: string};
    o: {name: string; sw: string; url?: string};
    avty: Array<{t: string; val_tpl: string; pl_avail: string; pl_not_avail: string}>;
    cmps: Record<string, DiscoveryComponent>;
}

/** Home Assistant's birth and will topic. */
export function homeAssistantStatusTopic(prefix: string): string {
    return `${prefix}/status`;
}

/** Pure: the discovery payload for one device. */
export function discoveryPayload(d: DiscoveryInput): DiscoveryPayload {
    const id = (key: string): string => `qwen_edge_${d.device}_${key}`;
    // Health sensors go unavailable when health stops arriving, not only when the status says offline.
    const expireAfter = Math.max(60, d.intervalSeconds * 3);
    const health = (key: string, name: string, template: string, extra: Record<string, unknown> = {}): DiscoveryComponent => ({
        p: "sensor", name, unique_id: id(key), state_topic: d.topics.health, value_template: template,
        state_class: "measurement", expire_after: expireAfter, ...extra
    });
    const states: readonly DeviceState[] = DEVICE_STATES;
    return {
        dev: {
            ids: [`qwen_edge_${d.device}`],
            name: `qwen-edge ${d.device}`,
            sw: d.version,
            ...(d.model !== null ? {mdl: d.model} : {}),
            ...(d.manufacturer !== null ? {mf: d.manufacturer} : {})
        },
        o: {name: "qwen-edge", sw: d.version, ...(d.supportUrl !== null ? {url: d.supportUrl} : {})},
        avty: [{
            t: d.topics.status,
            // degraded, loading and starting devices still report: only offline is unavailable
            val_tpl: "{{ 'offline' if value_json.state == 'offline' else 'online' }}",
            pl_avail: "online",
            pl_not_avail: "offline"
        }],
        cmps: {
            state: {
                p: "sensor", name: "State", unique_id: id("state"), state_topic: d.topics.status,
                value_template: "{{ value_json.state }}", device_class: "enum", options: [...states],
                json_attributes_topic: d.topics.status, icon: "mdi:state-machine"
            },
            model: {
                p: "sensor", name: "Model", unique_id: id("model"), state_topic: d.topics.info,
                value_template: "{{ value_json.model.name }}", icon: "mdi:brain", entity_category: "diagnostic"
            },
            // Generation speed over the requests that finished recently; unknown while idle.
            tokens_per_second: health("tokens_per_second", "Tokens per second", "{{ value_json.inference.tokensPerSecond.recent }}",
                {unit_of_measurement: "tok/s", icon: "mdi:speedometer", suggested_display_precision: 1}),
            queue: health("queue", "Queue", "{{ value_json.inference.queued }}", {unit_of_measurement: "requests", icon: "mdi:tray-full"}),
            ...(d.temperature ? {temperature: health("temperature", "Temperature", "{{ value_json.cpu.temperatureC }}",
                {device_class: "temperature", unit_of_measurement: "°C", suggested_display_precision: 1})} : {}),
            memory_available: health("memory_available", "Memory available", "{{ (value_json.memory.availableBytes / 1048576) | round(0) }}",
                {device_class: "data_size", unit_of_measurement: "MiB", icon: "mdi:memory"}),
            throttled: {
                p: "binary_sensor", name: "Throttled", unique_id: id("throttled"), state_topic: d.topics.health,
                // no throttling word (not a Raspberry Pi, or unreadable): unknown, not OFF
                value_template: "{{ 'None' if value_json.cpu.throttling is none else ('ON' if value_json.cpu.throttling.now.any else 'OFF') }}",
                payload_on: "ON", payload_off: "OFF", device_class: "problem", expire_after: expireAfter, entity_category: "diagnostic"
            }
        }
    };
}

export interface DiscoveryPublisherDeps {
    topic: string;
    payload: () => DiscoveryPayload;
    /** publishes retained at QoS 1; resolves when the broker has it */
    publish: (topic: string, payload: string) => Promise<void>;
    connected: () => boolean;
    onError: (err: Error) => void;
}

export class DiscoveryPublisher {
    private readonly deps: DiscoveryPublisherDeps;
    private lastPayload = "";

    public constructor(deps: DiscoveryPublisherDeps) {
        this.deps = deps;
    }

    /** Publishes the discovery message (retained). `force` republishes an unchanged one. */
    public async announce(force = true): Promise<void> {
        if (!this.deps.connected()) return;
        const payload = JSON.stringify(this.deps.payload());
        if (!force && payload === this.lastPayload) return;
        this.lastPayload = payload;
        try {
            await this.deps.publish(this.deps.topic, payload);
        } catch (err) {
            this.lastPayload = "";
            this.deps.onError(err as Error);
        }
    }

    /** Home Assistant's birth message: `online` means it (re)started and wants discovery again. */
    public onHomeAssistantStatus(payload: Buffer): Promise<void> {
        return payload.toString("utf8").trim() === "online" ? this.announce(true) : Promise.resolve();
    }
}
