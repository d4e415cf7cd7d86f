/**
 * Issue 5, end to end: the built daemon with a 1 s telemetry interval against a real Mosquitto and a
 * real qwen35 GGUF. A subscriber sees the status transitions in order, the retained info, health every
 * second with every field typed, Home Assistant discovery (re-sent on Home Assistant's birth
 * message), /metrics, and `qwen-edge status`.
 */
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {readFileSync} from "node:fs";
import {after, before, describe, it} from "node:test";
import {freePort, type Broker} from "../support/broker.js";
import {runCli, type DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import {parseExposition} from "../support/exposition.js";
import type {InfoMessage} from "../../src/telemetry/info.js";
import {assertHealthShape} from "../support/health-shape.js";
import {discoveryProblems, entityStates, jinjaMissing} from "../support/home-assistant.js";
import {probeDevice, readTemperatureC} from "../../src/system/probe.js";
import {TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";

const DEVICE = "tele-test";
const BASE = `qwen-edge/${DEVICE}`;
const DISCOVERY = `homeassistant/device/${DEVICE}/config`;
/** promtool (Debian's prometheus package) checks the live /metrics where it is installed; .ci/run installs it. */
const promtool = spawnSync("promtool", ["--version"]).status === 0;
const VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {version: string}).version;

void describe("telemetry over a real broker", () => {
    let h: Harness;
    let broker: Broker;
    let daemon: DaemonProcess;
    let client: TestClient;
    let metricsPort: number;
    /** health topic -> message expiry interval of each received message */
    const expiries: Array<number | undefined> = [];

    before(async () => {
        h = await Harness.start({prefix: "qe-telemetry-"});
        ({broker, client} = h);
        metricsPort = await freePort();
        // Listening before subscribing: every health message's expiry is recorded.
        client.client.on("message", (topic, _payload, packet) => {
            if (topic === `${BASE}/health`) expiries.push(packet.properties?.messageExpiryInterval);
        });
        await client.subscribe(`${BASE}/#`);
        await client.subscribe("homeassistant/#");
        await client.subscribe("replies/#");
        daemon = await h.start({device: DEVICE,
            args: ["--telemetry-interval-seconds", "1", "--telemetry-home-assistant", "--telemetry-metrics-port", String(metricsPort)]}, 60_000);
    });

    after(() => h?.dispose());

    void it("shows the status transitions in order: starting, loading (with progress), online", () => {
        const statuses = client.received.filter((m) => m.topic === `${BASE}/status`);
        assert.ok(statuses.every((m) => m.retain || m.json !== null));
        assert.deepEqual(statuses.map((m) => m.json?.state), ["starting", "loading", "online"]);
        const loading = statuses[1]?.json as {progress?: Record<string, unknown>};
        assert.equal(loading.progress?.phase, "loading");
        for (const m of statuses) assert.ok(!Number.isNaN(Date.parse(String(m.json?.since))), "since is a timestamp");
    });

    void it("keeps a retained info with versions, the model, the limits and the request schema", async () => {
        const late = await TestClient.connect(broker.url);
        try {
            await late.subscribe(`${BASE}/info`);
            const info = await late.waitFor("retained info", (m) => m.topic === `${BASE}/info`, 10_000);
            assert.equal(info.retain, true);
            const j = info.json as unknown as InfoMessage & {requestSchema: {$id: string; properties: {maxTokens: {maximum: number}}}};
            assert.deepEqual(j.versions, {qwenEdge: VERSION, nodeLlamaCpp: "3.21.1", node: process.version});
            assert.equal(j.device, DEVICE);
            assert.equal(j.model.name, "tiny-scripted");
            assert.equal(j.model.state, "ready");
            assert.equal(typeof j.model.sizeBytes, "number");
            assert.equal(j.limits.contextSize, 1024);
            assert.equal(j.limits.maxTokensCap, 2048);
            assert.equal(j.limits.maxQueue, 32);
            assert.equal(j.requestSchema.$id, "urn:qwen-edge:request:v1");
            assert.equal(j.requestSchema.properties.maxTokens.maximum, 2048);
            assert.equal(typeof j.deviceFacts?.cpu.cores, "number");
            assert.equal(j.deviceFacts?.arch, process.arch);
            assert.equal(j.telemetry.intervalSeconds, 1);
        } finally {
            await late.close();
        }
    });

    void it("publishes health every second, with an expiry and every field typed, counting a finished request", async () => {
        await client.publish(`${BASE}/request`, JSON.stringify({id: "tele-1", prompt: "hello", replyTo: "replies/tele-1"}));
        const reply = await client.waitFor("reply to tele-1", (m) => m.topic === "replies/tele-1");
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
        const after = client.received.length;
        const healths = await client.waitForCount("3 health messages after the reply",
            (m) => m.topic === `${BASE}/health` && client.received.indexOf(m) >= after, 3, 10_000);
        const gaps = healths.slice(1, 3).map((m, i) => m.at - healths[i]!.at);
        for (const gap of gaps) assert.ok(gap > 500 && gap < 2500, `health every ~1 s, got gaps ${gaps.join(", ")} ms`);
        for (const m of healths) {
            const h = assertHealthShape(m.json);
            assert.equal(h.device, DEVICE);
            assert.equal(h.state, "online");
            assert.equal(h.intervalSeconds, 1);
            assert.equal(h.mqtt.connected, true);
            assert.equal(h.inference.modelState, "ready");
            assert.ok(h.inference.completed >= 1, "the request is counted");
            assert.ok(h.inference.tokensGenerated > 0);
            assert.equal(typeof h.inference.ttftMs.p50, "number");
            assert.ok(h.collectMs < 200, `collectMs ${h.collectMs}`);
            assert.ok(h.disk !== null && h.disk.freeBytes > 0, "disk free where the model lives");
        }
        assert.ok(expiries.length >= 3 && expiries.every((e) => e !== undefined && e >= 1 && e <= 2), `expiries ${expiries.join(",")}`);
    });

    void it("announces the device to Home Assistant, and again when Home Assistant comes online", async () => {
        const first = await client.waitFor("retained discovery config", (m) => m.topic === DISCOVERY);
        const j = first.json as {dev: {ids: string[]; mdl?: string}; o: {name: string}; cmps: Record<string, {p: string; unique_id: string; state_topic: string}>};
        assert.deepEqual(discoveryProblems(j), [], "Home Assistant's device-discovery schema");
        assert.ok(j.dev.ids.length > 0);
        assert.equal(j.o.name, "qwen-edge");
        const facts = await probeDevice();
        assert.equal(j.dev.mdl, facts.board.model ?? facts.cpu.model ?? undefined, "the board, else the CPU: what this machine is");
        for (const key of ["state", "model", "tokens_per_second", "queue", "memory_available", "throttled"]) assert.ok(j.cmps[key], key);
        const thermal = await readTemperatureC() !== null;
        assert.equal("temperature" in j.cmps, thermal, thermal ? "a Temperature entity: this host has a thermal zone" : "no Temperature entity: no thermal zone here");
        const before = client.received.filter((m) => m.topic === DISCOVERY).length;
        await client.publish("homeassistant/status", "online", {qos: 0});
        await client.waitFor("discovery re-sent after homeassistant/status online",
            () => client.received.filter((m) => m.topic === DISCOVERY).length > before, 10_000);
        const late = await TestClient.connect(broker.url);
        try {
            await late.subscribe(DISCOVERY);
            const retained = await late.waitFor("retained discovery for a late subscriber", (m) => m.topic === DISCOVERY, 5000);
            assert.equal(retained.retain, true);
        } finally {
            await late.close();
        }
    });

    void it("shows in Home Assistant what the host can tell: unknown where it cannot, tokens/s only while recent", {skip: jinjaMissing}, async () => {
        const discovery = client.received.find((m) => m.topic === DISCOVERY && m.json !== null)?.json as unknown as {cmps: Record<string, Record<string, unknown>>};
        const healths = client.received.filter((m) => m.topic === `${BASE}/health`);
        const before = healths.find((m) => (m.json as {inference: {completed: number}}).inference.completed === 0);
        const afterRequest = await client.waitFor("a health message counting the request", (m) => m.topic === `${BASE}/health`
            && (m.json as {inference: {completed: number}}).inference.completed >= 1, 5000);
        assert.ok(before, "a health message from before the first request");
        const idle = entityStates(discovery, {[`${BASE}/health`]: before.text});
        assert.equal(idle.tokens_per_second, "unknown", "no request finished yet: unknown, not 0 or a stale figure");
        const throttling = (before.json as {cpu: {throttling: {now: {any: boolean}} | null}}).cpu.throttling;
        assert.equal(idle.throttled, throttling === null ? "unknown" : throttling.now.any ? "on" : "off");
        const busy = entityStates(discovery, {[`${BASE}/health`]: afterRequest.text});
        assert.ok(Number(busy.tokens_per_second) > 0, `tokens/s after a request: ${busy.tokens_per_second}`);
        const status = client.received.filter((m) => m.topic === `${BASE}/status`).at(-1)!;
        assert.equal(entityStates(discovery, {[`${BASE}/status`]: status.text}).state, "online");
    });

    void it("serves /metrics on 127.0.0.1 in the exposition format, clean for promtool", async () => {
        const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, {signal: AbortSignal.timeout(5000)});
        assert.equal(res.status, 200);
        const text = await res.text();
        const families = parseExposition(text);
        assert.ok((families.get("qwen_edge_requests_completed_total")?.samples[0]?.value ?? 0) >= 1);
        assert.ok((families.get("qwen_edge_tokens_predicted_total")?.samples[0]?.value ?? 0) > 0);
        assert.ok((families.get("qwen_edge_predicted_tokens_per_second")?.samples[0]?.value ?? 0) > 0, "a request finished within the window");
        assert.equal(families.get("qwen_edge_status")?.samples.find((s) => s.labels.state === "online")?.value, 1);
        assert.equal(families.get("qwen_edge_mqtt_connected")?.samples[0]?.value, 1);
        assert.equal(families.get("qwen_edge_request_errors_total")?.samples.find((s) => s.labels.code === "queue_full")?.value, 0);
        assert.ok(families.has("qwen_edge_memory_available_bytes"));
        const fds = families.get("process_open_fds")?.samples[0]?.value ?? 0;
        assert.ok(fds > 3 && fds < (families.get("process_max_fds")?.samples[0]?.value ?? 0), `open fds ${fds}`);
        if (promtool) {
            const check = spawnSync("promtool", ["check", "metrics"], {input: text, encoding: "utf8"});
            assert.equal(`${check.stdout}${check.stderr}`, "", "promtool check metrics says nothing");
            assert.equal(check.status, 0);
        }
    });

    void it("`qwen-edge status` prints every device, or one, as JSON; exits 4 for an unknown device", async () => {
        const all = runCli(["status", "--json", "--mqtt-url", broker.url]);
        assert.equal((await all.exited).code, 0, all.stderr());
        const parsed = JSON.parse(all.stdout()) as {devices: Array<{device: string; status: {state: string}; info: {model: {name: string}}; health: unknown}>};
        const mine = parsed.devices.find((d) => d.device === DEVICE);
        assert.equal(mine?.status.state, "online");
        assert.equal(mine?.info.model.name, "tiny-scripted");
        assertHealthShape(mine?.health);

        const one = runCli(["status", "--device", DEVICE, "--json", "--mqtt-url", broker.url]);
        assert.equal((await one.exited).code, 0, one.stderr());
        assert.equal((JSON.parse(one.stdout()) as {device: string}).device, DEVICE);

        const table = runCli(["status", "--mqtt-url", broker.url]);
        assert.equal((await table.exited).code, 0, table.stderr());
        assert.match(table.stdout(), /^DEVICE\s+STATE/);
        assert.match(table.stdout(), new RegExp(`^${DEVICE}\\s+online\\s`, "m"));

        const missing = runCli(["status", "--device", "nope", "--wait", "1", "--mqtt-url", broker.url]);
        assert.equal((await missing.exited).code, 4);
        assert.match(missing.stderr(), /no status for device "nope"/);
    });

    void it("publishes offline on SIGTERM, and `qwen-edge homeassistant remove` clears the discovery", async () => {
        assert.deepEqual(await daemon.term(), {code: 0, signal: null});
        const statuses = client.received.filter((m) => m.topic === `${BASE}/status`).map((m) => m.json?.state);
        assert.deepEqual(statuses, ["starting", "loading", "online", "offline"]);

        const removal = runCli(["homeassistant", "remove", "--device", DEVICE, "--mqtt-url", broker.url]);
        assert.equal((await removal.exited).code, 0, removal.stderr());
        await client.waitFor("empty discovery payload", (m) => m.topic === DISCOVERY && m.payload.length === 0, 5000);
        const late = await TestClient.connect(broker.url);
        try {
            await late.subscribe(DISCOVERY);
            await new Promise((r) => setTimeout(r, 500));
            assert.equal(late.received.filter((m) => m.topic === DISCOVERY).length, 0, "no retained discovery left");
        } finally {
            await late.close();
        }
    });
});
