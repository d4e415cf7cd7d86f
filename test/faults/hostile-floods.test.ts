/**
 * Floods that used to wedge the device or the broker (issue 17), against the built daemon on a real
 * Mosquitto. A 5,000-level jsonSchema made intake throw: no PUBACK, and after ~20 such messages the
 * broker's in-flight window for the daemon's session was full and no QoS 1 request was delivered any
 * more, even after a restart (the same through a {{json}} route). And a route's rate limit counted per
 * source topic: 60 sensors gave 60 answers and left 62 retained topics on the broker.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import {waitUntil} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import {TestClient, type Received} from "../support/mqtt-client.js";
import {faultCase} from "../support/reliability.js";
import {withTimeout} from "../../src/util/timeout.js";

const DEEP = 5000;
const DEEP_COUNT = 25;
const SOURCES = 60;
const CAP = 8;

const ROUTES_YAML = `
routes:
  - name: dump
    topic: dump/+
    payload: json
    maxPerMinute: 0
    prompt: "Summarize {{json}}"
    maxTokens: 8
    reply: {topic: "dump/{{topic.1}}/summary"}
  # the issue's route: retained answers, the default limits (30 a minute for the route, 32 retained topics)
  - name: rooms
    topic: rooms/+/temp
    prompt: "The {{topic.1}} is at {{payload}} °C. Comment."
    maxTokens: 8
    reply: {topic: "rooms/{{topic.1}}/summary", retain: true}
  # a cap below the rate: the retained-topic cap is what binds
  - name: doors
    topic: doors/+/state
    prompt: "The {{topic.1}} door is {{payload}}."
    maxTokens: 8
    reply: {topic: "doors/{{topic.1}}/summary", retain: true, maxRetainedTopics: ${CAP}}
`;

describe("faults: floods of hostile messages", () => {
    let h: Harness;
    let client: TestClient;
    let config: string;

    /** Publishes and waits for the PUBACK (5 s, named). */
    const publishAcked = async (topic: string, payload: string, what: string): Promise<number> => {
        const at = Date.now();
        await withTimeout(client.publish(topic, payload), 5000, () => {
            throw new Error(`no PUBACK within 5000 ms for ${what}`);
        });
        return Date.now() - at;
    };
    /** A valid QoS 1 request on the default response topic: ms until its answer. */
    const next = async (device: string, id: string): Promise<number> => {
        const at = Date.now();
        await publishAcked(`qwen-edge/${device}/request`, JSON.stringify({id, prompt: "hi", maxTokens: 8}), id);
        const reply = await client.waitFor(`the answer to ${id}`, (m) => m.topic === `qwen-edge/${device}/response` && m.json?.id === id, 30_000);
        assert.equal(reply.json?.status, "ok", reply.text);
        return reply.at - at;
    };

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-floods-", subscribe: ["qwen-edge/+/status", "qwen-edge/+/response", "dump/#", "rooms/+/summary",
            "doors/+/summary"]});
        client = h.client;
        config = join(h.dir, "routes.yaml");
        await writeFile(config, ROUTES_YAML);
    });
    after(() => h?.dispose());

    faultCase("H03", async (row) => {
        const device = "fault-deep";
        const d = await h.start({device, args: ["--config", config]});
        const schema = "{\"a\":".repeat(DEEP) + "1" + "}".repeat(DEEP);
        row.inject(`${DEEP_COUNT} requests whose jsonSchema is nested ${DEEP} levels (${Math.round(schema.length / 1024)} KiB each), then ${DEEP_COUNT} `
            + `messages of ${DEEP} nested arrays on a {{json}} route, published one after another at QoS 1 (the broker's in-flight window is 20); `
            + "then a valid request");
        let slowestAck = 0;
        for (let i = 0; i < DEEP_COUNT; i++)
            slowestAck = Math.max(slowestAck, await publishAcked(`qwen-edge/${device}/request`, `{"id":"deep-${i}","prompt":"hi","jsonSchema":${schema}}`, `deep-${i}`));
        for (let i = 0; i < DEEP_COUNT; i++)
            slowestAck = Math.max(slowestAck, await publishAcked("dump/deep", "[".repeat(DEEP) + "]".repeat(DEEP), `deep route message ${i}`));
        // refused before the JSON is parsed, so without an id: every error on the response topic is one of them
        const errors = await client.waitForCount(`${DEEP_COUNT} error replies to the deep schemas`, (m) => m.topic === `qwen-edge/${device}/response`
            && m.json?.status === "error", DEEP_COUNT, 20_000);
        await waitUntil(`${DEEP_COUNT} route refusals logged`, () => d.logs.filter((l) => l.message === "route message invalid" && l.route === "dump").length >= DEEP_COUNT, 20_000);
        const nextMs = await next(device, "deep-next");
        const codes = new Set(errors.map((m) => (m.json?.error as {code?: string}).code));
        const message = String((errors[0]!.json?.error as {message?: string}).message);
        const thrown = d.logs.filter((l) => l.message === "intake failed; the message is acknowledged without an answer").length;

        row.replies(DEEP_COUNT, Math.min(errors.length, DEEP_COUNT), Math.max(0, errors.length - DEEP_COUNT));
        row.recovered(nextMs);
        row.figure("acknowledged", `${2 * DEEP_COUNT} of ${2 * DEEP_COUNT}`);
        row.figure("slowest PUBACK (ms)", slowestAck);
        row.figure("error codes", [...codes].join(", "));
        row.figure("route messages dropped as invalid", d.logs.filter((l) => l.message === "route message invalid" && l.route === "dump").length);
        row.figure("intake exceptions", thrown);
        row.figure("next valid request answered in (ms)", nextMs);
        row.observe(`all ${2 * DEEP_COUNT} acknowledged (slowest PUBACK ${slowestAck} ms); the requests refused with ${[...codes].join(", ")} `
            + `("${message.split(";")[0]}"), the route messages dropped as invalid and counted, nothing thrown in intake; the next valid request `
            + `was answered ${nextMs} ms after it was sent`);

        assert.deepEqual([...codes], ["invalid_request"]);
        assert.match(message, /nested more than 64 levels deep/);
        assert.equal(thrown, 0);
        assert.ok(nextMs < 1000, `next valid request answered in ${nextMs} ms`);
        assert.equal((await d.term()).code, 0);
    });

    faultCase("H05", async (row) => {
        const device = "fault-flood";
        // a queue for all that the routes may admit: the route limits are what is measured, not inference.maxQueue (32)
        const d = await h.start({device, args: ["--config", config, "--inference-max-queue", "64"]});
        row.inject(`${SOURCES} messages at once on ${SOURCES} distinct source topics for each of two retained routes: rooms/+/temp (the defaults: `
            + `maxPerMinute 30, reply.maxRetainedTopics 32) and doors/+/state (maxRetainedTopics ${CAP}); inference.maxQueue 64; then a native request`);
        const sentAt = Date.now();
        await Promise.all(Array.from({length: SOURCES}, (_, i) => [
            client.publish(`rooms/r${i}/temp`, String(20 + (i % 5))),
            client.publish(`doors/d${i}/state`, i % 2 === 0 ? "open" : "closed")
        ]).flat());
        // sent once every flood message is acknowledged: it queues behind whatever the routes admitted
        const native = next(device, "flood-next");
        const settled = (route: string): number => d.logs.filter((l) => l.route === route
            && (l.message === "request accepted" || String(l.message).startsWith("route message dropped"))).length;
        await waitUntil(`all ${2 * SOURCES} route messages taken or dropped`, () => settled("rooms") >= SOURCES && settled("doors") >= SOURCES, 20_000);
        const accepted = (route: string): number => d.logs.filter((l) => l.message === "request accepted" && l.route === route).length;
        const answered = (route: string): number => d.logs.filter((l) => l.message === "request done" && l.route === route).length;
        await waitUntil("every accepted route request answered", () => answered("rooms") >= accepted("rooms") && answered("doors") >= accepted("doors"), 60_000);
        const nativeMs = await native;
        const dropped = (route: string, limit: string): number => d.logs.filter((l) => l.route === route && l.limit === limit).length;
        // what is retained on the broker now, as a client connecting sees it: retained messages arrive before a later live one
        const reader = await TestClient.connect(h.broker.url);
        let retainedTopics: Received[];
        try {
            await reader.subscribe("rooms/+/summary");
            await reader.subscribe("doors/+/summary");
            await reader.subscribe("barrier/reader");
            await reader.publish("barrier/reader", "after the retained ones");
            await reader.waitFor("the reader's barrier", (m) => m.topic === "barrier/reader");
            retainedTopics = reader.received.filter((m) => m.retain);
        } finally {
            await reader.close();
        }
        const retainedBy = (prefix: string): number => new Set(retainedTopics.filter((m) => m.topic.startsWith(prefix)).map((m) => m.topic)).size;
        const live = (prefix: string): number => client.received.filter((m) => m.topic.startsWith(prefix) && m.topic.endsWith("/summary") && m.at >= sentAt).length;

        row.replies(accepted("rooms") + accepted("doors"), live("rooms/") + live("doors/"), 0);
        row.figure("rooms: answers / route-limited / retained topics", `${live("rooms/")} / ${dropped("rooms", "route")} / ${retainedBy("rooms/")}`);
        row.figure("doors: answers / capped / retained topics", `${live("doors/")} / ${dropped("doors", "retained")} / ${retainedBy("doors/")}`);
        row.figure("native request sent right after the flood answered in (ms)", nativeMs);
        row.observe(`rooms: ${live("rooms/")} answers, ${dropped("rooms", "route")} dropped by the route-wide limit (30 a minute), `
            + `${retainedBy("rooms/")} retained topics left; doors: ${live("doors/")} answers, ${dropped("doors", "retained")} dropped at the retained-topic `
            + `cap (${CAP}), ${retainedBy("doors/")} retained topics; a native request sent right after the flood was answered after the `
            + `${accepted("rooms") + accepted("doors")} admitted route requests, in ${nativeMs} ms`);

        assert.equal(accepted("rooms"), 30, "the route-wide limit: 30 a minute");
        assert.equal(live("rooms/"), 30);
        assert.equal(dropped("rooms", "route"), SOURCES - 30);
        assert.ok(retainedBy("rooms/") <= 32 && retainedBy("rooms/") === 30, `rooms retained topics: ${retainedBy("rooms/")}`);
        assert.equal(accepted("doors"), CAP);
        assert.equal(live("doors/"), CAP);
        assert.equal(dropped("doors", "retained"), SOURCES - CAP);
        assert.equal(retainedBy("doors/"), CAP);
        assert.equal((await d.term()).code, 0);
    });
});
