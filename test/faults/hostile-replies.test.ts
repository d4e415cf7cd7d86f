/**
 * Hostile reply topics (issue 17), against the built daemon on a real Mosquitto: a topic the broker
 * refuses (a Unicode noncharacter; one too long for its max_packet_size) used to make the broker
 * disconnect the daemon, and the kept reply was resent at every reconnect and the journaled job after
 * every restart: the device went dark for good. Topics the daemon, Home Assistant or other devices read
 * were answered on. Each must be refused with an error on the default response topic, nothing
 * published where it pointed, the daemon connected, and the next valid QoS 1 request answered within a
 * second.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import type {Received, TestClient} from "../support/mqtt-client.js";
import {faultCase, type CaseRow} from "../support/reliability.js";
import {withTimeout} from "../../src/util/timeout.js";

const ROUTES_YAML = `
routes:
  - name: lights
    topic: buttons/+
    payload: json
    prompt: "Pick a scene for {{json.room}}"
    maxTokens: 8
    reply: {topic: "lights/{{json.room}}/set"}
  - name: temps
    topic: sensors/+/temp
    prompt: "Summarize {{payload}}"
    maxTokens: 8
    reply: {topic: "summaries/{{topic.1}}"}
`;

/** A 32 KiB broker limit: the daemon's own messages fit (info is the largest), a 32,000-byte topic with a reply does not. */
const MAX_PACKET = 32 * 1024;

/**
 * One device on its own broker: requests that must be refused, each followed by a valid one whose
 * answer must come within a second (the device still connected and serving).
 */
class Device {
    public readonly response: string;
    public slowestNext = 0;

    public constructor(private readonly h: Harness, public readonly name: string, public readonly daemon: DaemonProcess) {
        this.response = `qwen-edge/${name}/response`;
    }

    public get client(): TestClient {
        return this.h.client;
    }

    /** Publishes and waits for the PUBACK (5 s, named). */
    public async publish(payload: string | Buffer, what: string, options: Parameters<TestClient["publish"]>[2] = {}, topic = `qwen-edge/${this.name}/request`): Promise<void> {
        await withTimeout(this.client.publish(topic, payload, options), 5000, () => {
            throw new Error(`no PUBACK within 5000 ms for ${what}`);
        });
    }

    /** The error reply for `id` on the default response topic. */
    public refusal(id: string): Promise<Received> {
        return this.client.waitFor(`the error for ${id} on ${this.response}`, (m) => m.topic === this.response && m.json?.id === id, 10_000);
    }

    /** A valid QoS 1 request; its answer must come within a second. */
    public async next(id: string): Promise<number> {
        const at = Date.now();
        await this.publish(JSON.stringify({id, prompt: "hi", maxTokens: 8}), id);
        const reply = await this.client.waitFor(`the answer to ${id}`, (m) => m.topic === this.response && m.json?.id === id, 10_000);
        assert.equal(reply.json?.status, "ok", `${id}: ${reply.text}`);
        this.slowestNext = Math.max(this.slowestNext, reply.at - at);
        return reply.at - at;
    }

    public reconnects(): number {
        return this.daemon.logs.filter((l) => l.message === "mqtt reconnect scheduled").length;
    }

    /** Every message anywhere on the broker carrying one of `ids` in its payload, but on the response topic. */
    public strays(ids: readonly string[]): Received[] {
        return this.client.received.filter((m) => m.topic !== this.response && m.topic !== `qwen-edge/${this.name}/request`
            && ids.some((id) => m.text.includes(`"${id}"`)));
    }

    public figures(row: CaseRow): void {
        row.recovered(this.slowestNext);
        row.figure("slowest next valid request (ms)", this.slowestNext);
        row.figure("broker disconnects (daemon reconnects)", this.reconnects());
    }
}

describe("faults: hostile reply topics", () => {
    let h: Harness;
    let big: Harness;
    let routesConfig: string;

    before(async () => {
        // `#`: whatever the daemon publishes, anywhere, is seen
        h = await Harness.start({prefix: "qe-fault-replies-", subscribe: ["#"]});
        big = await Harness.start({prefix: "qe-fault-maxpacket-", broker: {extraConfig: [`max_packet_size ${MAX_PACKET}`]}, subscribe: ["#"]});
        routesConfig = join(h.dir, "routes.yaml");
        await writeFile(routesConfig, ROUTES_YAML);
    });
    after(async () => {
        await h?.dispose();
        await big?.dispose();
    });

    faultCase("H01", async (row) => {
        const stateDir = join(h.dir, "nonchar-state");
        const device = new Device(h, "fault-nonchar", await h.start({device: "fault-nonchar", stateDir, args: ["--config", routesConfig]}));
        const topics = ["a/\uffff", "a/\ufffe", "a/\ufdd0", "a/\u{10ffff}"];
        row.inject(`4 requests whose replyTo holds a Unicode noncharacter (${topics.map((t) => `a/U+${t.codePointAt(2)!.toString(16).toUpperCase()}`).join(", ")}), `
            + "and a route message whose templated reply topic would (lights/{{json.room}}/set with room U+FFFF); each followed by a valid "
            + "QoS 1 request; then a restart on the same journal");
        const ids = topics.map((_, i) => `nonchar-${i}`);
        const messages: string[] = [];
        for (const [i, topic] of topics.entries()) {
            await device.publish(JSON.stringify({id: ids[i], prompt: "hi", replyTo: topic}), ids[i]!);
            messages.push(String(((await device.refusal(ids[i]!)).json?.error as {message?: string}).message));
            await device.next(`nonchar-next-${i}`);
        }
        const routedAt = Date.now();
        await device.publish(JSON.stringify({room: "\uffff"}), "the route message", {}, "buttons/hall");
        const invalid = await device.daemon.waitForLog("the route's refusal", (l) => l.message === "route message invalid" && l.route === "lights"
            && Date.parse(String(l.timestamp)) >= routedAt - 1000, 10_000);
        await device.next("nonchar-next-route");
        // a restart: nothing kept (journal, outgoing store) may bring a poison reply back
        assert.equal((await device.daemon.term()).code, 0);
        const again = new Device(h, "fault-nonchar", await h.start({device: "fault-nonchar", stateDir, args: ["--config", routesConfig]}));
        await again.next("nonchar-after-restart");
        const strays = device.strays(ids);

        row.replies(ids.length, ids.filter((id) => h.client.received.some((m) => m.topic === device.response && m.json?.id === id)).length, 0);
        device.figures(row);
        row.figure("reconnects after the restart", again.reconnects());
        row.figure("refusal", messages[0]!.split(";")[0]!);
        row.figure("route's refusal", String(invalid.problem).split(";")[0]!);
        row.figure("published outside the response topic", strays.length);
        row.observe(`each refused with invalid_request on ${device.response} ("${messages[0]!.split(";")[0]}"); the route message dropped `
            + `(route message invalid, counted); the daemon never disconnected (${device.reconnects()} reconnects), answered the next valid request `
            + `each time within ${device.slowestNext} ms, and after a restart had nothing to resend (${again.reconnects()} reconnects)`);

        assert.ok(messages.every((m) => /^replyTo contains a Unicode noncharacter/.test(m)), messages.join(" | "));
        assert.match(String(invalid.problem), /noncharacter/);
        assert.equal(device.reconnects() + again.reconnects(), 0, "the broker never disconnected the daemon");
        assert.ok(device.slowestNext < 1000, `next valid request answered in ${device.slowestNext} ms`);
        assert.deepEqual(strays.map((m) => m.topic), []);
        assert.ok(!h.client.received.some((m) => m.topic.startsWith("lights/")), "nothing on a lights/ topic");
        assert.equal((await again.daemon.term()).code, 0);
    });

    faultCase("H02", async (row) => {
        const name = "fault-maxpacket";
        const device = new Device(big, name, await big.start({device: name}));
        const info = big.client.received.find((m) => m.topic === `qwen-edge/${name}/info`);
        const long = "long/" + "x".repeat(32_000);
        row.inject(`a broker with max_packet_size ${MAX_PACKET}; a request with a ${long.length}-byte replyTo, one with a ${long.length}-byte `
            + "MQTT v5 Response Topic (and correlation data), one whose Response Topic fits only without the reply; each followed by a valid QoS 1 request");
        const cases: Array<[string, string, Parameters<TestClient["publish"]>[2]]> = [
            ["long-replyto", JSON.stringify({id: "long-replyto", prompt: "hi", replyTo: long}), {}],
            ["long-response-topic", JSON.stringify({id: "long-response-topic", prompt: "hi"}),
                {properties: {responseTopic: long, correlationData: Buffer.from("c-1")}}],
            // fits the broker with an empty payload, not with a reply (the 1 KiB reserve)
            ["edge-response-topic", JSON.stringify({id: "edge-response-topic", prompt: "hi"}), {properties: {responseTopic: "edge/" + "y".repeat(MAX_PACKET - 600)}}]
        ];
        const messages: string[] = [];
        let correlated = false;
        for (const [id, payload, options] of cases) {
            await device.publish(payload, id, options);
            const refusal = await device.refusal(id);
            messages.push(String((refusal.json?.error as {message?: string}).message));
            if (id === "long-response-topic") correlated = refusal.correlationData?.toString() === "c-1";
            await device.next(`${id}-next`);
        }
        const strays = device.strays(cases.map(([id]) => id));

        row.replies(cases.length, cases.filter(([id]) => big.client.received.some((m) => m.topic === device.response && m.json?.id === id)).length, 0);
        device.figures(row);
        row.figure("info message (bytes)", info?.payload.length ?? null);
        row.figure("refusal", messages[0]!.replace(/\d{5,}/g, "N").split(";")[0]!);
        row.figure("correlation data echoed on the error", correlated);
        row.figure("published outside the response topic", strays.length);
        row.observe(`all ${cases.length} refused with invalid_request on ${device.response} before anything was queued ("${messages[1]!.split(";")[0]!.replace(/\d{5,}/g, "N")}"); `
            + `the daemon stayed connected (${device.reconnects()} reconnects) and answered the next valid request each time within ${device.slowestNext} ms`);

        assert.ok(messages.every((m) => /too long for this broker/.test(m)), messages.join(" | "));
        assert.ok(correlated, "the error carries the request's correlation data");
        assert.equal(device.reconnects(), 0);
        assert.ok(device.slowestNext < 1000, `next valid request answered in ${device.slowestNext} ms`);
        assert.deepEqual(strays.map((m) => m.topic.slice(0, 40)), []);
        assert.equal((await device.daemon.term()).code, 0);
    });

    faultCase("H04", async (row) => {
        const name = "fault-policy";
        const device = new Device(h, name, await h.start({device: name, args: ["--config", routesConfig, "--telemetry-home-assistant", "true"]}));
        const base = `qwen-edge/${name}`;
        const targets: Array<[string, string]> = [
            ["own status", `${base}/status`], ["own info", `${base}/info`], ["own health", `${base}/health`],
            ["Home Assistant discovery", `homeassistant/device/${name}/config`], ["Home Assistant status", "homeassistant/status"],
            ["another device's request", "qwen-edge/other/request"], ["another device's cancel", "qwen-edge/other/cancel"],
            ["another device's response", "qwen-edge/other/response"], ["the fleet request", "qwen-edge/fleet/request"],
            ["a route's input", "sensors/kitchen/temp"]
        ];
        row.inject(`${targets.length} requests with replyTo aimed at ${targets.map(([what]) => what).join(", ")}; the same ${targets.length} `
            + "as an MQTT v5 Response Topic; an observer subscribed to #");
        const sentAt = Date.now();
        const ids: string[] = [];
        for (const [i, [, topic]] of targets.entries()) {
            ids.push(`policy-${i}`, `policy-rt-${i}`);
            await device.publish(JSON.stringify({id: `policy-${i}`, prompt: "hi", maxTokens: 8, replyTo: topic}), `replyTo ${topic}`);
            await device.publish(JSON.stringify({id: `policy-rt-${i}`, prompt: "hi", maxTokens: 8}), `Response Topic ${topic}`, {properties: {responseTopic: topic}});
        }
        const refusals = await Promise.all(ids.map((id) => device.refusal(id)));
        // queued behind anything the refused requests could have started: once it is answered, theirs would have been published
        await device.next("policy-next");
        const strays = device.strays(ids);
        const onTargets = h.client.received.filter((m) => m.at >= sentAt && targets.some(([, t]) => t === m.topic)
            && !(m.topic.startsWith(`${base}/`) && m.json?.id === undefined));
        const routed = device.daemon.logs.filter((l) => typeof l.route === "string").length;
        const codes = new Set(refusals.map((m) => (m.json?.error as {code?: string}).code));

        row.replies(ids.length, refusals.length, 0);
        device.figures(row);
        row.figure("error codes", [...codes].join(", "));
        row.figure("messages on the targets (besides the daemon's own telemetry)", onTargets.length);
        row.figure("messages carrying a refused id outside the response topic", strays.length);
        row.figure("route log lines (the route fired?)", routed);
        row.observe(`all ${ids.length} refused with ${[...codes].join(", ")} on ${device.response}, naming the rule ("${
            String((refusals[0]!.json?.error as {message?: string}).message).split(":")[0]}: …"); on every target topic nothing but the daemon's `
            + `own telemetry (${onTargets.length} other messages), no message with a refused id anywhere else, the route never fired; `
            + `the next valid request was answered in ${device.slowestNext} ms`);

        assert.deepEqual([...codes], ["invalid_request"]);
        assert.deepEqual(onTargets.map((m) => m.topic), []);
        assert.deepEqual(strays.map((m) => m.topic), []);
        assert.equal(routed, 0, "the route's input got no answer, so the route never fired");
        assert.ok(device.slowestNext < 1000);
        assert.equal((await device.daemon.term()).code, 0);
    });
});
