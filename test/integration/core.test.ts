/**
 * Issue 2, end to end: real Mosquitto, the built daemon as a child process, a real qwen35 GGUF
 * loaded by node-llama-cpp.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import type {Broker} from "../support/broker.js";
import {runCli, type DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import {TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";

const DEVICE = "core-test";
const BASE = `qwen-edge/${DEVICE}`;

describe("daemon core over a real broker", () => {
    let h: Harness;
    let broker: Broker;
    let daemon: DaemonProcess;
    let client: TestClient;

    before(async () => {
        h = await Harness.start({prefix: "qe-core-", subscribe: [`${BASE}/#`, "replies/#"]});
        ({broker, client} = h);
        daemon = await h.start({device: DEVICE});
    });

    after(() => h?.dispose());

    it("answers a v5 request on its Response Topic with the same Correlation Data, exactly once", async () => {
        const correlation = Buffer.from([0, 1, 2, 250, 255]);
        await client.publish(`${BASE}/request`, JSON.stringify({id: "v5-1", prompt: "Say hello", maxTokens: 32}),
            {properties: {responseTopic: "replies/v5-1", correlationData: correlation}});
        const reply = await client.waitFor("reply to v5-1 on replies/v5-1", (m) => m.topic === "replies/v5-1");
        assert.equal(reply.json?.status, "ok");
        assert.equal(reply.json?.id, "v5-1");
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
        assert.equal(reply.json?.finishReason, "stop");
        assert.equal(reply.json?.device, DEVICE);
        assert.deepEqual(reply.correlationData, correlation);
        const usage = reply.json?.usage as {promptTokens: number; completionTokens: number};
        assert.ok(usage.promptTokens > 0 && usage.completionTokens > 0, JSON.stringify(usage));
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(client.received.filter((m) => m.topic === "replies/v5-1").length, 1, "exactly one reply");
    });

    it("answers a plain-text MQTT 3.1.1 publish on {base}/{device}/response", async () => {
        const v3 = await TestClient.connect(broker.url, {protocolVersion: 4});
        try {
            await v3.subscribe(`${BASE}/response`);
            await v3.publish(`${BASE}/request`, "What is the weather like?");
            const reply = await v3.waitFor("plain-text reply on /response", (m) => m.topic === `${BASE}/response` && m.json?.status === "ok");
            assert.equal(reply.json?.text, SCRIPTED_ANSWER);
            assert.match(String(reply.json?.id), /^req-/);
        } finally {
            await v3.close();
        }
    });

    it("uses replyTo from the JSON when there is no Response Topic", async () => {
        await client.publish(`${BASE}/request`, JSON.stringify({id: "rt-1", prompt: "hi", replyTo: "replies/by-json"}));
        const reply = await client.waitFor("reply on replies/by-json", (m) => m.topic === "replies/by-json");
        assert.equal(reply.json?.id, "rt-1");
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
    });

    const badInputs: Array<{name: string; payload: Buffer | string; code: string; id?: string}> = [
        {name: "malformed JSON", payload: "{\"id\": \"bad-1\", \"prompt\": ", code: "invalid_json"},
        {name: "wrong type", payload: JSON.stringify({id: "bad-2", prompt: 42}), code: "invalid_request", id: "bad-2"},
        {name: "unknown field", payload: JSON.stringify({id: "bad-3", prompt: "x", colour: "red"}), code: "invalid_request", id: "bad-3"},
        {name: "invalid UTF-8", payload: Buffer.from([0x68, 0x69, 0xff, 0xfe]), code: "invalid_encoding"},
        {name: "payload too large", payload: "x".repeat(70 * 1024), code: "payload_too_large"},
        {name: "wildcard replyTo", payload: JSON.stringify({id: "bad-6", prompt: "x", replyTo: "a/+/b"}), code: "invalid_request", id: "bad-6"},
        {name: "zero maxTokens", payload: JSON.stringify({id: "bad-7", prompt: "x", maxTokens: 0}), code: "invalid_request", id: "bad-7"}
    ];
    for (const bad of badInputs) {
        it(`answers ${bad.name} with ${bad.code} and keeps serving`, async () => {
            const before = client.received.length;
            await client.publish(`${BASE}/request`, bad.payload);
            const reply = await client.waitFor(`${bad.code} error on ${BASE}/response`,
                (m) => client.received.indexOf(m) >= before && m.topic === `${BASE}/response` && m.json?.status === "error");
            const error = reply.json?.error as {code: string; message: string};
            assert.equal(error.code, bad.code);
            assert.ok(error.message.length > 0);
            if (bad.id) assert.equal(reply.json?.id, bad.id);
            const id = `after-${bad.code}-${before}`;
            await client.publish(`${BASE}/request`, JSON.stringify({id, prompt: "still there?", replyTo: `replies/${id}`}));
            const ok = await client.waitFor(`ok reply for ${id}`, (m) => m.topic === `replies/${id}`);
            assert.equal(ok.json?.status, "ok");
        });
    }

    it("refuses a wildcard Response Topic and answers on the default topic", async () => {
        await client.publish(`${BASE}/request`, JSON.stringify({id: "wild-rt", prompt: "x"}), {properties: {responseTopic: "replies/#"}});
        const reply = await client.waitFor("error for wild-rt", (m) => m.topic === `${BASE}/response` && m.json?.id === "wild-rt");
        assert.equal((reply.json?.error as {code: string}).code, "invalid_request");
    });

    it("never logs prompt or completion text", () => {
        const all = daemon.stdout();
        assert.ok(!all.includes("What is the weather like?"), "prompt text in the log");
        assert.ok(!all.includes(SCRIPTED_ANSWER), "completion text in the log");
    });

    it("`qwen-edge status` shows live counters, not the last 30-second snapshot", async () => {
        const completed = async (): Promise<{at: number; completed: number; stderr: string}> => {
            const cli = runCli(["status", "--device", DEVICE, "--json", "--mqtt-url", broker.url]);
            assert.equal((await cli.exited).code, 0, cli.stderr());
            const view = JSON.parse(cli.stdout()) as {health: {at: string; inference: {completed: number}}};
            return {at: Date.parse(view.health.at), completed: view.health.inference.completed, stderr: cli.stderr()};
        };
        const before = await completed();
        await new Promise((r) => setTimeout(r, 1100)); // the daemon answers one refresh a second
        for (const id of ["live-1", "live-2", "live-3"]) {
            await client.publish(`${BASE}/request`, JSON.stringify({id, prompt: "hi", maxTokens: 8, replyTo: `replies/${id}`}));
            await client.waitFor(`reply to ${id}`, (m) => m.topic === `replies/${id}`);
        }
        const answeredAt = Date.now();
        const now = await completed();
        assert.equal(now.completed, before.completed + 3, "the three answers are counted (the daemon's interval is 30 s)");
        assert.ok(now.at >= answeredAt - 50, `a snapshot taken after the answers: ${new Date(now.at).toISOString()}`);
        assert.equal(now.stderr, "", "no log lines");
        const table = runCli(["status", "--mqtt-url", broker.url]);
        assert.equal((await table.exited).code, 0, table.stderr());
        assert.match(table.stdout(), new RegExp(`^${DEVICE}\\s+online\\s.*\\s[0-2]s\\s*$`, "m"), "health age of a second or two");
    });

    it("publishes retained offline on SIGTERM and exits 0", async () => {
        const exit = await daemon.term();
        assert.deepEqual(exit, {code: 0, signal: null});
        const late = await TestClient.connect(broker.url);
        try {
            await late.subscribe(`${BASE}/status`);
            const status = await late.waitFor("retained status after SIGTERM", (m) => m.topic === `${BASE}/status`);
            assert.equal(status.retain, true);
            assert.equal(status.json?.state, "offline");
        } finally {
            await late.close();
        }
    });

    it("leaves a retained offline through the will after SIGKILL", async () => {
        const d = await h.spawn({device: "core-kill", args: ["--mqtt-keepalive-seconds", "2"]});
        const watcher = await TestClient.connect(broker.url);
        try {
            await watcher.subscribe("qwen-edge/core-kill/status");
            await watcher.waitFor("core-kill online", (m) => m.json?.state === "online");
            await d.kill();
            const offline = await watcher.waitFor("will: core-kill offline", (m) => m.json?.state === "offline", 15_000);
            assert.equal(offline.json?.reason, "connection lost");
        } finally {
            await watcher.close();
        }
    });

    it("exits 2 naming the key for an unknown key or a bad value", async () => {
        const file = join(h.dir, "bad.yaml");
        await writeFile(file, "inference:\n  threads: 1\n  colour: red\n");
        const unknown = runCli(["run", "--config", file]);
        assert.equal((await unknown.exited).code, 2);
        assert.match(unknown.stderr(), /inference\.colour/);
        const badValue = runCli(["run", "--model-variant", "13b"]);
        assert.equal((await badValue.exited).code, 2);
        assert.match(badValue.stderr(), /model\.variant/);
        const badFlag = runCli(["run", "--no-such-flag", "1"]);
        assert.equal((await badFlag.exited).code, 2);
        assert.match(badFlag.stderr(), /--no-such-flag/);
    });
});
