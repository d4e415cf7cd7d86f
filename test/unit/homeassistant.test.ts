/**
 * The discovery payload against Home Assistant's documented device-discovery schema
 * (homeassistant/components/mqtt/schemas.py: DEVICE_DISCOVERY_SCHEMA): `device` (`dev`) with at
 * least one identifier, `origin` (`o`) with a `name`, `components` (`cmps`) each with a `platform`
 * (`p`) of a supported component and a `unique_id`; availability entries with a `topic` (`t`).
 */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {topicLayout, validatePublishTopic, validateTopicFilter} from "../../src/mqtt/topics.js";
import {discoveryPayload, DiscoveryPublisher, homeAssistantStatusTopic, type DiscoveryPayload} from "../../src/telemetry/homeassistant.js";
import {FakeLink} from "../support/fake-link.js";

const layout = topicLayout("qwen-edge", "pi-kitchen", "qwen-edge");
const input = {
    device: "pi-kitchen", prefix: "homeassistant", topics: {status: layout.status, info: layout.info, health: layout.health},
    version: "0.1.0", board: "Raspberry Pi 4 Model B Rev 1.4", arch: "arm64", intervalSeconds: 30
};
/** Platforms Home Assistant's MQTT integration accepts in discovery (SUPPORTED_COMPONENTS), the ones we could use. */
const SUPPORTED = new Set(["binary_sensor", "button", "number", "select", "sensor", "switch", "text", "update"]);
/** Top-level keys of DEVICE_DISCOVERY_SCHEMA, abbreviated or not. */
const TOP_LEVEL = new Set(["dev", "device", "o", "origin", "cmps", "components", "avty", "availability", "avty_mode", "availability_mode",
    "state_topic", "command_topic", "qos", "encoding"]);

void describe("Home Assistant device discovery payload", () => {
    const payload: DiscoveryPayload = discoveryPayload(input);

    void it("goes to {prefix}/device/{device}/config", () => {
        assert.equal(layout.discovery("homeassistant"), "homeassistant/device/pi-kitchen/config");
        assert.equal(homeAssistantStatusTopic("homeassistant"), "homeassistant/status");
    });

    void it("has only keys of the device-discovery schema at the top, and the mandatory ones", () => {
        for (const key of Object.keys(payload)) assert.ok(TOP_LEVEL.has(key), `unexpected top-level key ${key}`);
        for (const key of ["dev", "o", "cmps"]) assert.ok(key in payload, `missing ${key}`);
    });

    void it("identifies the device and names the origin", () => {
        assert.ok(Array.isArray(payload.dev.ids) && payload.dev.ids.length > 0 && payload.dev.ids.every((id) => typeof id === "string" && id !== ""));
        assert.equal(payload.dev.name, "qwen-edge pi-kitchen");
        assert.equal(payload.dev.mdl, "Raspberry Pi 4 Model B Rev 1.4");
        assert.equal(payload.dev.sw, "0.1.0");
        assert.equal(payload.o.name, "qwen-edge");
        assert.equal(payload.o.sw, "0.1.0");
    });

    void it("takes availability from the retained status, unavailable only when offline", () => {
        assert.equal(payload.avty.length, 1);
        const a = payload.avty[0]!;
        assert.equal(a.t, "qwen-edge/pi-kitchen/status");
        assert.equal(validateTopicFilter(a.t), null);
        assert.equal(a.pl_avail, "online");
        assert.equal(a.pl_not_avail, "offline");
        assert.match(a.val_tpl, /value_json\.state == 'offline'/);
    });

    void it("declares the sensors the issue names, each with a supported platform, a unique id and a state topic", () => {
        const expected = ["state", "model", "tokens_per_second", "queue", "temperature", "memory_available"];
        for (const key of expected) assert.ok(key in payload.cmps, `missing component ${key}`);
        const ids = new Set<string>();
        for (const [key, c] of Object.entries(payload.cmps)) {
            assert.match(key, /^[a-zA-Z0-9_-]+$/, "component ids are topic-safe");
            assert.ok(SUPPORTED.has(c.p), `${key}: platform ${c.p}`);
            assert.ok(typeof c.unique_id === "string" && c.unique_id !== "", `${key}: unique_id`);
            assert.ok(!ids.has(c.unique_id), `${key}: unique_id ${c.unique_id} is not unique`);
            ids.add(c.unique_id);
            assert.ok([layout.status, layout.info, layout.health].includes(c.state_topic), `${key}: state_topic ${c.state_topic}`);
            assert.equal(validatePublishTopic(c.state_topic), null);
            assert.match(c.value_template, /^\{\{.*value_json.*\}\}$/, `${key}: value_template reads the JSON`);
            assert.ok(typeof c.name === "string" && c.name !== "");
        }
    });

    void it("uses Home Assistant's device classes with their units", () => {
        const c = payload.cmps;
        assert.equal(c.temperature?.device_class, "temperature");
        assert.equal(c.temperature?.unit_of_measurement, "°C");
        assert.equal(c.memory_available?.device_class, "data_size");
        assert.equal(c.memory_available?.unit_of_measurement, "MiB");
        assert.equal(c.state?.device_class, "enum");
        assert.deepEqual(c.state?.options, ["starting", "loading", "online", "degraded", "offline"]);
        assert.equal(c.throttled?.p, "binary_sensor");
        assert.equal(c.throttled?.device_class, "problem");
        for (const key of ["tokens_per_second", "queue", "temperature", "memory_available"]) {
            assert.equal(c[key]?.state_class, "measurement");
            assert.ok((c[key]?.expire_after as number) >= 90, `${key}: expires after 3 health intervals`);
        }
    });

    void it("names the machine type when the board is unknown", () => {
        assert.equal(discoveryPayload({...input, board: null, arch: "x64"}).dev.mdl, "x64 device");
    });
});

void describe("discovery publisher", () => {
    void it("publishes retained on announce and again when Home Assistant says online, not offline", async () => {
        const link = new FakeLink();
        const topic = layout.discovery("homeassistant");
        const publisher = new DiscoveryPublisher({topic, payload: () => discoveryPayload(input),
            publish: (t, p) => link.publish(t, p, {qos: 1, retain: true}), connected: () => link.connected, onError: (e) => assert.fail(e)});
        await publisher.announce();
        await publisher.onHomeAssistantStatus(Buffer.from("offline"));
        assert.equal(link.on(topic).length, 1);
        await publisher.onHomeAssistantStatus(Buffer.from("online"));
        assert.equal(link.on(topic).length, 2);
        assert.ok(link.on(topic).every((p) => p.options.retain === true));
        assert.deepEqual(JSON.parse(link.on(topic)[1]!.payload), discoveryPayload(input));
        link.connected = false;
        await publisher.onHomeAssistantStatus(Buffer.from("online"));
        assert.equal(link.on(topic).length, 2, "nothing is queued while disconnected");
    });
});
