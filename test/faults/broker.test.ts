/**
 * Faults between the daemon and the broker: the broker restarts while a generation runs, and the
 * network drops silently (a half-open connection through a TCP proxy the test controls). Real
 * Mosquitto with persistence, the built daemon, the "endless" model (runs to maxTokens).
 */
import assert from "node:assert/strict";
import {after, before, describe} from "node:test";
import type {Broker} from "../support/broker.js";
import type {DaemonProcess} from "../support/daemon.js";
import {finals, logsSince, logTime, waitUntil} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import type {TestClient} from "../support/mqtt-client.js";
import {countFinals, faultCase} from "../support/reliability.js";
import {startTcpProxy, type TcpProxy} from "../support/tcp-proxy.js";

const KEEPALIVE_S = 2;

describe("faults: the broker goes away", () => {
    let h: Harness;
    let broker: Broker;
    let client: TestClient;
    let proxy: TcpProxy | null = null;

    const start = (device: string, url: string, args: string[]): Promise<DaemonProcess> => h.start({device, model: "endless", brokerUrl: url,
        args: ["--inference-context-size", "4096", "--shutdown-drain-ms", "300", "--telemetry-interval-seconds", "1", ...args]});
    const send = (device: string, id: string, body: Record<string, unknown>): Promise<void> =>
        client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, replyTo: `r/${id}`, ...body}));
    const firstChunk = (id: string): Promise<unknown> =>
        client.waitFor(`first streamed chunk of ${id}`, (m) => m.topic === `r/${id}` && m.json?.status === "streaming");
    const finalOk = (id: string, timeoutMs = 30_000): Promise<unknown> =>
        client.waitFor(`final reply of ${id}`, (m) => m.topic === `r/${id}` && m.json?.status === "ok", timeoutMs);
    /** A request queued after `ids`: its reply means theirs were all published (FIFO), so duplicates can be counted. */
    const barrier = async (device: string, id: string): Promise<void> => {
        await send(device, id, {prompt: "barrier", maxTokens: 4});
        await finalOk(id);
    };
    const healthWith = (device: string, since: number, match: (h: Record<string, unknown>) => boolean): Promise<unknown> =>
        client.waitFor(`${device} health after ${new Date(since).toISOString()}`, (m) => m.topic === `qwen-edge/${device}/health`
            && m.at >= since && m.json !== null && match(m.json), 10_000);

    before(async () => {
        // A persistent session: replies published while this client reconnects after the broker restart wait for it.
        h = await Harness.start({prefix: "qe-fault-broker-", client: {persistent: true, clientId: `faults-observer-${process.pid}`},
            subscribe: ["qwen-edge/+/status", "qwen-edge/+/health", "r/#"]});
        ({broker, client} = h);
    });
    after(async () => {
        await h?.dispose();
        await proxy?.close();
    });

    faultCase("F01", async (row) => {
        const device = "fault-restart";
        // Slower reconnects than the other tests, so requests can be published while the broker is up and the daemon not yet back.
        const d = await start(device, broker.url, ["--mqtt-reconnect-min-ms", "1500", "--mqtt-reconnect-max-ms", "3000"]);
        row.inject("SIGTERM to Mosquitto (persistence on) while a 2,048-token streamed generation runs; restarted after the daemon's 2nd "
            + "reconnect attempt; 2 requests published after the restart, before the daemon is back");
        await send(device, "br-run", {prompt: "go", maxTokens: 2048, stream: true});
        await firstChunk("br-run");
        const downAt = Date.now();
        await broker.stop();
        await d.waitForLog("2nd reconnect attempt scheduled", (l) => l.message === "mqtt reconnect scheduled" && l.attempt === 2 && logTime(l) >= downAt, 20_000);
        await broker.restart();
        const upAt = Date.now();
        await waitUntil("the observer back on the restarted broker", () => client.client.connected, 10_000);
        await send(device, "br-down-1", {prompt: "while away", maxTokens: 16});
        await send(device, "br-down-2", {prompt: "while away", maxTokens: 16});
        const publishedAt = Date.now();
        const connected = await d.waitForLog("mqtt connected again", (l) => l.message === "mqtt connected" && l.connects === 2, 20_000);
        for (const id of ["br-run", "br-down-1", "br-down-2"]) await finalOk(id);
        const repliedAt = Date.now();
        await barrier(device, "br-barrier");

        const ids = ["br-run", "br-down-1", "br-down-2"];
        const counted = countFinals(ids, (id) => finals(client, `r/${id}`).length);
        row.replies(ids.length, counted.received, counted.duplicates);
        const done = d.logs.find((l) => l.message === "request done" && l.id === "br-run");
        const delays = logsSince(d, "mqtt reconnect scheduled", downAt).map((l) => Number(l.inMs));
        const health = await healthWith(device, logTime(connected), (h) => (h.mqtt as {reconnects: number}).reconnects >= 1) as {json: {mqtt: {reconnects: number}}};
        row.recovered(logTime(connected) - upAt);
        row.figure("broker down (ms)", upAt - downAt);
        row.figure("reconnect delays (ms)", delays.join(", "));
        row.figure("session present", connected.sessionPresent === true);
        row.figure("generation ended while disconnected", done !== undefined && logTime(done) > downAt && logTime(done) < logTime(connected));
        row.figure("requests published before reconnect", publishedAt < logTime(connected));
        row.figure("broker up → replies (ms)", repliedAt - upAt);
        row.figure("health mqtt.reconnects", health.json.mqtt.reconnects);
        row.observe(`reconnected with backoff (${delays.length} attempts: ${delays.join(", ")} ms) and session present; the reply of the `
            + "interrupted generation and both requests sent while the daemon was away arrived exactly once");

        assert.equal(connected.sessionPresent, true, "the persistent session survived the broker restart");
        assert.ok(delays.length >= 2 && delays[1]! > delays[0]!, `growing delays: ${delays.join(", ")}`);
        assert.ok(done !== undefined && logTime(done) > downAt, "the generation was still running when the broker went down");
        assert.ok(publishedAt < logTime(connected), "the two requests were published before the daemon reconnected");
        assert.deepEqual(counted, {received: 3, duplicates: 0});
        assert.equal((await d.term()).code, 0);
    });

    faultCase("F02", async (row) => {
        const device = "fault-net";
        proxy = await startTcpProxy({host: "127.0.0.1", port: broker.port});
        const d = await start(device, proxy.url, ["--mqtt-keepalive-seconds", String(KEEPALIVE_S), "--mqtt-connect-timeout-ms", "1000",
            "--mqtt-reconnect-min-ms", "200", "--mqtt-reconnect-max-ms", "1000"]);
        row.inject(`all traffic through a TCP proxy silently dropped both ways (no FIN, no RST) while a generation streams; `
            + `keepalive ${KEEPALIVE_S} s; a request published meanwhile; the link restored after a failed reconnect attempt`);
        const startedAt = Date.now();
        await healthWith(device, startedAt, (h) => (h.mqtt as {reconnects: number}).reconnects === 0);
        await send(device, "net-run", {prompt: "go", maxTokens: 2048, stream: true});
        await firstChunk("net-run");
        const dropAt = Date.now();
        proxy.blackhole();
        await send(device, "net-during", {prompt: "during the drop", maxTokens: 16});
        const detected = await d.waitForLog("the dead link noticed", (l) => l.message === "mqtt reconnect scheduled" && logTime(l) >= dropAt,
            KEEPALIVE_S * 3000);
        const detectMs = logTime(detected) - dropAt;
        await d.waitForLog("a reconnect attempt through the dead link given up", (l) => l.message === "mqtt reconnect scheduled"
            && Number(l.attempt) >= 2 && logTime(l) >= dropAt, 10_000);
        const healAt = Date.now();
        proxy.heal();
        const connected = await d.waitForLog("mqtt connected after the drop", (l) => l.message === "mqtt connected" && l.connects === 2, 10_000);
        for (const id of ["net-run", "net-during"]) await finalOk(id);
        await barrier(device, "net-barrier");
        const health = await healthWith(device, logTime(connected), (h) => (h.mqtt as {reconnects: number}).reconnects >= 1) as {json: {mqtt: {reconnects: number}}};

        const ids = ["net-run", "net-during"];
        const counted = countFinals(ids, (id) => finals(client, `r/${id}`).length);
        const will = client.received.find((m) => m.topic === `qwen-edge/${device}/status` && m.at >= dropAt && m.json?.state === "offline");
        row.replies(ids.length, counted.received, counted.duplicates);
        row.recovered(logTime(connected) - healAt);
        row.figure("detected after (ms)", detectMs);
        row.figure("bound 1.5 × keepalive (ms)", KEEPALIVE_S * 1500);
        row.figure("problem logged", ((logsSince(d, "mqtt connection problem", dropAt)[0]?.reason as string | undefined) ?? "none")
            .replace(/mqtt:\/\/127\.0\.0\.1:\d+/, "<broker>"));
        row.figure("broker published the will", will !== undefined);
        row.figure("health mqtt.reconnects", health.json.mqtt.reconnects);
        row.figure("bytes dropped", proxy.dropped());
        row.observe(`the silent link was noticed ${detectMs} ms after the drop (keepalive timeout), reconnect attempts timed out until `
            + "the link came back, then the session resumed; the in-flight reply and the request sent during the drop arrived exactly once; "
            + `health counts the reconnect (mqtt.reconnects ${health.json.mqtt.reconnects})`);

        // MQTT.js sends PINGREQ after one keepalive of silence from the broker and gives up half a keepalive later;
        // the timer ticks every keepalive / 2, so allow one scheduling slack on top.
        assert.ok(detectMs <= KEEPALIVE_S * 1500 + 250, `detected after ${detectMs} ms`);
        assert.deepEqual(counted, {received: 2, duplicates: 0});
        assert.ok(health.json.mqtt.reconnects >= 1);
        assert.equal((await d.term()).code, 0);
    });
});
