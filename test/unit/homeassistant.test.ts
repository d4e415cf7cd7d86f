/**
 * The discovery payload against Home Assistant's documented device-discovery schema
 * (homeassistant/components/mqtt/schemas.py: DEVICE_DISCOVERY_SCHEMA): `device` (`dev`) with at
 * least one identifier, `origin` (`o`) with a `name`, `components` (`cmps`) each with a `platform`
 * (`p`) of a supported component and a `unique_id`; availability entries with a `topic` (`t`). And
 * what the entities show for a health message, rendered the way Home Assistant renders them
 * (test/support/home-assistant.ts).
 */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {topicLayout, validatePublishTopic, validateTopicFilter} from "../../src/mqtt/topics.js";
import {discoveryPayload, DiscoveryPublisher, homeAssistantStatusTopic, type DiscoveryPayload} from "../../src/telemetry/homeassistant.js";
import {decodeThrottled} from "../../src/system/throttle.js";
import {FakeLink} from "../support/fake-link.js";
import {discoveryProblems, entityStates, jinjaMissing} from "../support/home-assistant.js";

const layout = topicLayout("qwen-edge", "pi-kitchen", "qwen-edge");
const input = {
    device: "pi-kitchen", prefix: "homeassistant", topics: {status: layout.status, info: layout.info, health: layout.health},
    version: "0.1.0", model: "Raspberry Pi 4 Model B Rev 1.4", manufacturer: "Raspberry Pi Ltd", temperature: true,
    supportUrl: "https://example.org/qwen-edge", intervalSeconds: 30
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

    void it("passes Home Assistant's schema, on a Pi and on a host that knows nothing about itself", () => {
        assert.deepEqual(discoveryProblems(payload), []);
        assert.deepEqual(discoveryProblems(discoveryPayload({...input, model: null, manufacturer: null, temperature: false, supportUrl: null})), []);
        // The checker can fail: what Home Assistant would refuse.
        assert.deepEqual(discoveryProblems({dev: {name: "x"}, o: {sw: "1", homepage: "x"}, cmps: {a: {p: "light"}}}), [
            "the device needs an identifier (ids)", "unknown origin key homepage", "the origin needs a name",
            "component a: platform light is not supported", "component a: no unique_id (needed for a device's entity)"]);
    });

    void it("identifies the device and names the origin", () => {
        assert.ok(Array.isArray(payload.dev.ids) && payload.dev.ids.length > 0 && payload.dev.ids.every((id) => typeof id === "string" && id !== ""));
        assert.equal(payload.dev.name, "qwen-edge pi-kitchen");
        assert.equal(payload.dev.mdl, "Raspberry Pi 4 Model B Rev 1.4");
        assert.equal(payload.dev.mf, "Raspberry Pi Ltd");
        assert.equal(payload.dev.sw, "0.1.0");
        assert.deepEqual(payload.o, {name: "qwen-edge", sw: "0.1.0", url: "https://example.org/qwen-edge"});
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
        const expected = ["state", "model", "tokens_per_second", "queue", "temperature", "memory_available", "throttled"];
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

    void it("says what the machine is, or nothing: never a made-up model or maker", () => {
        const pc = discoveryPayload({...input, model: "AMD EPYC 7B13 64-Core Processor", manufacturer: null});
        assert.equal(pc.dev.mdl, "AMD EPYC 7B13 64-Core Processor");
        assert.equal("mf" in pc.dev, false);
        const unknown = discoveryPayload({...input, model: null, manufacturer: null, supportUrl: null});
        assert.equal("mdl" in unknown.dev, false);
        assert.deepEqual(unknown.o, {name: "qwen-edge", sw: "0.1.0"});
    });

    void it("has no Temperature entity on a host without a thermal zone", () => {
        assert.equal("temperature" in discoveryPayload({...input, temperature: false}).cmps, false);
        assert.ok("temperature" in payload.cmps);
    });
});

void describe("what Home Assistant shows for a health message", () => {
    const health = (cpu: object, tokensPerSecond: object): string => JSON.stringify({
        cpu: {temperatureC: null, throttling: null, ...cpu}, memory: {availableBytes: 1_887_436_800},
        inference: {queued: 2, tokensPerSecond: {last: 7.5, average: 7.1, recent: null, windowSeconds: 60, ...tokensPerSecond}}
    });
    const payload = discoveryPayload(input);
    const states = (message: string): Record<string, string> => entityStates(payload, {[layout.health]: message});

    void it("unknown where the host cannot tell: no throttling word, no reading, no recent request", {skip: jinjaMissing}, () => {
        const s = states(health({}, {}));
        assert.equal(s.throttled, "unknown", "not OFF on a host that cannot tell");
        assert.equal(s.temperature, "unknown");
        assert.equal(s.tokens_per_second, "unknown", "idle: not the last request's 7.5");
        assert.equal(s.queue, "2");
        assert.equal(s.memory_available, "1800");
    });

    void it("the figures where there are some: a Pi throttling now, 61.3 °C, 6.4 tokens per second", {skip: jinjaMissing}, () => {
        const s = states(health({temperatureC: 61.3, throttling: decodeThrottled(0x50005, "sysfs")}, {recent: 6.4}));
        assert.deepEqual([s.throttled, s.temperature, s.tokens_per_second], ["on", "61.3", "6.4"]);
        assert.equal(states(health({throttling: decodeThrottled(0x50000, "sysfs")}, {})).throttled, "off", "throttled since boot, not now");
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
