/**
 * Issue 17, end to end with the built daemon on a real Mosquitto: payloads that used to make intake
 * throw (no PUBACK: after 20 the broker's in-flight window was full and nothing was delivered any
 * more) or took the daemon offline (a reply topic the broker refuses) are now acknowledged and
 * answered with an error, and the next valid request is answered at once.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import type {TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";
import {withTimeout} from "../../src/util/timeout.js";

const DEVICE = "hostile-test";
const REQUEST = `qwen-edge/${DEVICE}/request`;
const RESPONSE = `qwen-edge/${DEVICE}/response`;
const ROUTES_YAML = `
routes:
  - name: dump
    topic: dump/+
    payload: json
    maxPerMinute: 0
    prompt: "Summarize {{json}}"
    maxTokens: 8
    reply: {topic: "dump/{{topic.1}}/summary"}
  - name: lights
    topic: buttons/+
    payload: json
    prompt: "Pick a scene for {{json.room}}"
    maxTokens: 8
    reply: {topic: "lights/{{json.room}}/set"}
`;

/** Resolves at the PUBACK; a publish the daemon never acknowledges fails here, by name. */
async function publishAcked(client: TestClient, topic: string, payload: string, what: string): Promise<void> {
    await withTimeout(client.publish(topic, payload), 5000, () => {
        throw new Error(`no PUBACK within 5000 ms for ${what}`);
    });
}

void describe("hostile input against the daemon", () => {
    let h: Harness;
    let daemon: DaemonProcess;
    let client: TestClient;

    before(async () => {
        h = await Harness.start({prefix: "qe-hostile-", subscribe: [`qwen-edge/${DEVICE}/#`, "dump/#", "lights/#", "a/#"]});
        client = h.client;
        const config = join(h.dir, "routes.yaml");
        await writeFile(config, ROUTES_YAML);
        daemon = await h.start({device: DEVICE, args: ["--config", config]}, 60_000);
    });

    after(() => h?.dispose());

    void it("acknowledges and refuses 25 requests whose jsonSchema is 5,000 levels deep, then answers the next one at once", async () => {
        const schema = "{\"a\":".repeat(5000) + "1" + "}".repeat(5000);
        for (let i = 0; i < 25; i++)
            await publishAcked(client, REQUEST, `{"id":"deep-${i}","prompt":"hi","jsonSchema":${schema}}`, `deep-schema request ${i}`);
        const errors = await client.waitForCount("25 error replies to the deep schemas",
            (m) => m.topic === RESPONSE && m.json?.status === "error" && (m.json.error as {code?: string}).code === "invalid_request", 25, 20_000);
        assert.match((errors[0]?.json?.error as {message: string}).message, /nested more than 64 levels deep \(arrays and objects\); the limit is 64/);
        const sent = Date.now();
        await publishAcked(client, REQUEST, JSON.stringify({id: "after-deep", prompt: "hi", maxTokens: 8}), "the valid request after them");
        const ok = await client.waitFor("the answer to after-deep", (m) => m.topic === RESPONSE && m.json?.id === "after-deep", 10_000);
        assert.deepEqual([ok.json?.status, ok.json?.text], ["ok", SCRIPTED_ANSWER]);
        assert.ok(ok.at - sent < 5000, `answered in ${ok.at - sent} ms`);
        assert.equal(daemon.logs.filter((l) => l.message === "message not accepted; left for redelivery").length, 0);
    });

    void it("refuses a noncharacter replyTo on the default topic and stays connected", async () => {
        await publishAcked(client, REQUEST, JSON.stringify({id: "nonchar", prompt: "hi", replyTo: "a/\uffff"}), "the noncharacter request");
        const error = await client.waitFor("the error for nonchar", (m) => m.topic === RESPONSE && m.json?.id === "nonchar");
        assert.equal(error.topic, RESPONSE);
        assert.match((error.json?.error as {message: string}).message, /^replyTo contains a Unicode noncharacter/);
        await publishAcked(client, REQUEST, JSON.stringify({id: "after-nonchar", prompt: "hi", maxTokens: 8}), "the request after it");
        assert.equal((await client.waitFor("the answer to after-nonchar", (m) => m.topic === RESPONSE && m.json?.id === "after-nonchar")).json?.status, "ok");
        assert.ok(!daemon.logs.some((l) => l.message === "mqtt reconnect scheduled"), "the broker never disconnected the daemon");
        assert.ok(!client.received.some((m) => m.topic.startsWith("a/")), "nothing was published on the refused topic");
    });

    void it("drops a 5,000-level payload on a {{json}} route and a noncharacter in a templated reply topic, and routes the next message", async () => {
        await publishAcked(client, "dump/x", "[".repeat(5000) + "]".repeat(5000), "the deep route payload");
        await publishAcked(client, "buttons/hall", JSON.stringify({room: "\uffff"}), "the noncharacter room");
        await daemon.waitForLog("the deep payload refused", (l) => l.message === "route message invalid" && l.route === "dump" && l.code === "invalid_request");
        await daemon.waitForLog("the noncharacter topic refused", (l) => l.message === "route message invalid" && l.route === "lights" &&
            /noncharacter/.test(String(l.problem)));
        await publishAcked(client, "dump/x", JSON.stringify({a: [1, 2]}), "a normal route payload");
        const answer = await client.waitFor("the route's answer on dump/x/summary", (m) => m.topic === "dump/x/summary", 10_000);
        assert.equal(answer.text, SCRIPTED_ANSWER);
        assert.ok(!client.received.some((m) => m.topic.startsWith("lights/")), "nothing on a lights/ topic");
        assert.ok(!daemon.logs.some((l) => l.message === "mqtt reconnect scheduled"));
    });
});
