/**
 * Issue 10, end to end: prompt routes on a real Mosquitto, the built daemon with a YAML config,
 * a real qwen35 GGUF. Text, number and JSON payloads through wildcard routes; reply topics built
 * from matched levels; rate limit, filters, malformed payloads, loops; a crash mid-generation.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {freePort, type Broker} from "../support/broker.js";
import {parseExposition} from "../support/exposition.js";
import {runCli, type DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import {TestClient, type Received} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";

const DEVICE = "routes-test";

const ROUTES_YAML = `
routes:
  - name: sensor
    topic: home/+/temperature
    filter: {above: -40, below: 85}
    minIntervalMs: 60000
    system: "You describe sensor readings for a dashboard in one short sentence."
    prompt: "The {{topic.1}} temperature is {{payload}} °C. Is that comfortable?"
    maxTokens: 32
    reply: {topic: "home/{{topic.1}}/temperature/summary", retain: true}
  - name: doorbell
    topic: doorbell/+/ring
    prompt: "The {{topic.1}} doorbell camera says: {{payload}}. Announce the visitor."
    maxTokens: 32
    reply: {topic: "speaker/{{topic.1}}/say"}
  - name: command
    topic: buttons/+/action
    payload: json
    filter: {path: action, in: [double]}
    prompt: "The {{topic.1}} button was pressed {{json.action}}. Pick a light scene."
    jsonSchema: {type: object, properties: {scene: {enum: [bright, relax, night]}}, required: [scene]}
    maxTokens: 64
    reply: {topic: "lights/{{topic.1}}/set"}
  - name: ask-json
    topic: commands/+
    payload: json
    onInvalid: reply-error
    prompt: "{{json.text}}"
    maxTokens: 32
    reply: {topic: "commands/{{topic.1}}/result", format: json}
  - name: notify
    topic: notify/+
    payload: json
    prompt: "Tell the {{json.room}}: {{json.text}}"
    maxTokens: 32
    reply: {topic: "notify/out/{{json.room}}"}
`;

const LOOPING_YAML = `
routes:
  - name: fine
    topic: sensors/+/co2
    prompt: "CO2 is {{payload}} ppm"
    reply: {topic: "alerts/{{topic.1}}"}
  - name: echo
    topic: alerts/#
    prompt: "{{payload}}"
    reply: {topic: "alerts/echo"}
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("prompt routes over a real broker", () => {
    let h: Harness;
    let broker: Broker;
    let daemon: DaemonProcess;
    let client: TestClient;
    let configFile: string;
    let metricsPort: number;
    const on = (topic: string): Received[] => client.received.filter((m) => m.topic === topic);

    before(async () => {
        h = await Harness.start({prefix: "qe-routes-",
            subscribe: [`qwen-edge/${DEVICE}/status`, "home/#", "speaker/#", "lights/#", "commands/#", "notify/#"]});
        ({broker, client} = h);
        configFile = join(h.dir, "routes.yaml");
        await writeFile(configFile, ROUTES_YAML);
        // An old value kept by the broker: delivered on subscribe with the retain flag, never answered.
        await client.publish("home/old/temperature", "21.0", {retain: true});
        metricsPort = await freePort();
        daemon = await h.start({device: DEVICE, args: ["--config", configFile, "--telemetry-metrics-port", String(metricsPort)]}, 60_000);
    });

    after(() => h?.dispose());

    it("answers a number payload with the answer text alone, retained, on a topic built from the matched level", async () => {
        await client.publish("home/kitchen/temperature", "23.4");
        const reply = await client.waitFor("summary on home/kitchen/temperature/summary", (m) => m.topic === "home/kitchen/temperature/summary");
        assert.equal(reply.text, SCRIPTED_ANSWER);
        const accepted = await daemon.waitForLog("accepted log", (l) => l.message === "request accepted" && l.route === "sensor", 1000);
        assert.equal(accepted.source, "route:sensor");
        assert.match(String(accepted.id), /^sensor-/);
        const late = await TestClient.connect(broker.url);
        try {
            await late.subscribe("home/kitchen/temperature/summary");
            const retained = await late.waitFor("retained summary for a late subscriber", (m) => m.topic === "home/kitchen/temperature/summary");
            assert.equal(retained.retain, true);
            assert.equal(retained.text, SCRIPTED_ANSWER);
        } finally {
            await late.close();
        }
        const done = await daemon.waitForLog("done log", (l) => l.message === "request done" && l.id === accepted.id, 1000);
        assert.equal(done.route, "sensor");
    });

    it("does not answer a retained value the broker sends on subscribe", async () => {
        await daemon.waitForLog("retained skip", (l) => l.message === "route message skipped: retained (an old value sent on subscribe)"
            && l.topic === "home/old/temperature" && l.route === "sensor");
        await sleep(500);
        assert.equal(on("home/old/temperature/summary").length, 0);
    });

    it("answers a text payload (a doorbell) on its speaker's topic", async () => {
        await client.publish("doorbell/front/ring", "a courier holding a parcel");
        const reply = await client.waitFor("announcement on speaker/front/say", (m) => m.topic === "speaker/front/say");
        assert.equal(reply.text, SCRIPTED_ANSWER);
        assert.equal(reply.retain, false);
        assert.ok(!JSON.stringify(daemon.logs).includes("courier holding"), "the payload is never logged");
    });

    it("answers a JSON command that passes the filter with JSON that fits the schema, and drops one that does not", async () => {
        await client.publish("buttons/hall/action", JSON.stringify({action: "single"}));
        await client.publish("buttons/hall/action", JSON.stringify({action: "double"}));
        const reply = await client.waitFor("scene on lights/hall/set", (m) => m.topic === "lights/hall/set");
        const scene = JSON.parse(reply.text) as {scene?: string};
        assert.ok(["bright", "relax", "night"].includes(String(scene.scene)), reply.text);
        await daemon.waitForLog("filtered log", (l) => l.message === "route message filtered" && l.route === "command"
            && l.reason === "json.action is not one of the 1 listed values", 1000);
        await sleep(1000);
        assert.equal(on("lights/hall/set").length, 1, "only the double press is answered");
    });

    it("rate-limits per source topic: a second reading within minIntervalMs is dropped, another room still answered", async () => {
        await client.publish("home/attic/temperature", "19.0");
        await client.publish("home/attic/temperature", "19.5");
        await client.publish("home/cellar/temperature", "12.0");
        await client.waitFor("attic summary", (m) => m.topic === "home/attic/temperature/summary");
        await client.waitFor("cellar summary", (m) => m.topic === "home/cellar/temperature/summary");
        await daemon.waitForLog("rate-limit log", (l) => l.message === "route message dropped: rate limited" && l.route === "sensor"
            && l.topic === "home/attic/temperature", 1000);
        await sleep(1500);
        assert.equal(on("home/attic/temperature/summary").length, 1);
        assert.equal(on("home/cellar/temperature/summary").length, 1);
    });

    it("drops a reading the filter refuses", async () => {
        await client.publish("home/garage/temperature", "150");
        await daemon.waitForLog("filtered log", (l) => l.message === "route message filtered" && l.route === "sensor"
            && l.topic === "home/garage/temperature" && l.reason === "the payload is not below 85");
        await sleep(500);
        assert.equal(on("home/garage/temperature/summary").length, 0);
    });

    it("answers malformed JSON with an error reply where configured, and only logs it where not", async () => {
        await client.publish("commands/kitchen", "{\"text\": ");
        const error = await client.waitFor("error on commands/kitchen/result", (m) => m.topic === "commands/kitchen/result");
        assert.equal(error.json?.status, "error");
        assert.equal((error.json?.error as {code: string}).code, "invalid_json");
        await client.publish("commands/kitchen", JSON.stringify({text: "Say hello"}));
        const ok = await client.waitFor("JSON reply on commands/kitchen/result", (m) => m.topic === "commands/kitchen/result" && m.json?.status === "ok");
        assert.equal(ok.json?.text, SCRIPTED_ANSWER);
        assert.match(String(ok.json?.id), /^ask-json-/);

        await client.publish("buttons/porch/action", "{\"action\": ");
        await daemon.waitForLog("invalid log", (l) => l.message === "route message invalid" && l.route === "command"
            && l.code === "invalid_json" && l.action === "dropped");
        await sleep(500);
        assert.equal(on("lights/porch/set").length, 0);
    });

    it("refuses a reply topic value that would leave its level", async () => {
        await client.publish("notify/a", JSON.stringify({room: "kitchen/../../qwen-edge", text: "hi"}));
        const log = await daemon.waitForLog("invalid log", (l) => l.message === "route message invalid" && l.route === "notify");
        assert.match(String(log.problem), /reply\.topic: the value of \{\{json\.room\}\} contains "\/"/);
        assert.equal(log.action, "dropped");
        await client.publish("notify/b", JSON.stringify({room: "kitchen", text: "dinner is ready"}));
        const reply = await client.waitFor("notice on notify/out/kitchen", (m) => m.topic === "notify/out/kitchen");
        assert.equal(reply.text, SCRIPTED_ANSWER);
        assert.equal(client.received.filter((m) => m.topic.startsWith("notify/out/kitchen/")).length, 0);
    });

    it("reports every route's counters in health and /metrics", async () => {
        // what the tests above did: sensor answered 3 readings, dropped one rate-limited, one filtered, one retained;
        // ask-json answered one error reply and one answer; notify refused one reply topic and answered one
        await client.subscribe(`qwen-edge/${DEVICE}/health`);
        await client.publish(`qwen-edge/${DEVICE}/health/refresh`, "", {qos: 0});
        const health = await client.waitFor("a health snapshot with route counters", (m) => m.topic === `qwen-edge/${DEVICE}/health`
            && (m.json?.routes as Record<string, {answered: number}> | undefined)?.notify?.answered === 1);
        const routes = health.json?.routes as Record<string, Record<string, number>>;
        assert.deepEqual(Object.keys(routes).sort(), ["ask-json", "command", "doorbell", "notify", "sensor"]);
        const sensor = routes.sensor!;
        assert.deepEqual({accepted: sensor.accepted, answered: sensor.answered, rateLimited: sensor.rateLimited, filtered: sensor.filtered,
            retainedSkipped: sensor.retainedSkipped}, {accepted: 3, answered: 3, rateLimited: 1, filtered: 1, retainedSkipped: 1});
        assert.deepEqual({invalid: routes.notify!.invalid, answered: routes.notify!.answered}, {invalid: 1, answered: 1});
        assert.deepEqual({invalid: routes["ask-json"]!.invalid, answered: routes["ask-json"]!.answered}, {invalid: 1, answered: 1});
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        const family = parseExposition(text).get("qwen_edge_route_messages_total");
        assert.ok(family, "qwen_edge_route_messages_total is exposed");
        const value = (route: string, outcome: string): number | undefined =>
            family.samples.find((x) => x.labels.route === route && x.labels.outcome === outcome)?.value;
        assert.deepEqual([value("sensor", "answered"), value("sensor", "rate_limited"), value("notify", "invalid"), value("doorbell", "loop_refused")],
            [3, 1, 1, 0]);
    });

    it("explains a route with `routes test` without a model or broker", async () => {
        const cli = runCli(["routes", "test", "sensor", "--topic", "home/kitchen/temperature", "--payload", "23.4", "--config", configFile,
            "--device-id", DEVICE]);
        assert.deepEqual(await cli.exited, {code: 0, signal: null}, cli.stderr());
        assert.match(cli.stdout(), /topic\.1 = "kitchen"/);
        assert.match(cli.stdout(), /reply topic: {3}home\/kitchen\/temperature\/summary \(text, QoS 1, retained\)/);
        assert.match(cli.stdout(), /prompt:\n {4}The kitchen temperature is 23\.4 °C\. Is that comfortable\?/);
        const filtered = runCli(["routes", "test", "sensor", "--topic", "home/kitchen/temperature", "--payload", "99", "--config", configFile]);
        assert.equal((await filtered.exited).code, 1);
        assert.match(filtered.stdout(), /REFUSES the message: the payload is not below 85/);
    });

    it("refuses a looping configuration at start: exit code 2, naming both routes", async () => {
        const looping = join(h.dir, "looping.yaml");
        await writeFile(looping, LOOPING_YAML);
        const d = await h.spawn({device: "loop-test", args: ["--config", looping]});
        const exit = await d.exited;
        assert.equal(exit.code, 2, d.stderr());
        assert.match(d.stderr(), /routes\[0\] \(fine\)\.reply\.topic "alerts\/\{\{topic\.1\}\}" could match routes\[1\] \(echo\)\.topic "alerts\/#"/);
        assert.match(d.stderr(), /routes\[1\] \(echo\)\.reply\.topic "alerts\/echo" could match routes\[1\] \(echo\)\.topic "alerts\/#": .*a loop/);
    });
});

describe("a route's request survives a crash", () => {
    let h: Harness;
    let client: TestClient;
    const DEV = "routes-crash";

    // The same state directory each time: the journal carries the route's request across the crash.
    const start = (configFile: string): Promise<DaemonProcess> => h.start({device: DEV, model: "endless", stateDir: join(h.dir, "state"),
        args: ["--config", configFile, "--inference-context-size", "4096", "--shutdown-drain-ms", "300"]}, 60_000);

    before(async () => {
        h = await Harness.start({prefix: "qe-routes-crash-", subscribe: [`qwen-edge/${DEV}/status`, "crash/#"]});
        client = h.client;
    });
    after(() => h?.dispose());

    it("answers exactly once, in the route's format, after SIGKILL in the middle of its generation", async () => {
        const configFile = join(h.dir, "crash.yaml");
        await writeFile(configFile, `
routes:
  - name: crash
    topic: crash/+/in
    prompt: "Write a long story about {{payload}}."
    maxTokens: 1500
    reply: {topic: "crash/{{topic.1}}/out"}
`);
        const d = await start(configFile);
        await client.publish("crash/one/in", "a lighthouse");
        const accepted = await d.waitForLog("route request accepted", (l) => l.message === "request accepted" && l.route === "crash");
        await sleep(700);
        await d.kill();
        assert.equal(client.received.filter((m) => m.topic === "crash/one/out").length, 0, "no reply before the crash");
        const d2 = await start(configFile);
        await d2.waitForLog("replay of the route's request", (l) => l.message === "replaying unfinished request" && l.id === accepted.id, 5000);
        const reply = await client.waitFor("the story on crash/one/out after restart", (m) => m.topic === "crash/one/out", 120_000);
        assert.ok(reply.text.trim().length > 0);
        assert.equal(reply.json?.status, undefined, "text format: the answer alone, not a reply object");
        const done = await d2.waitForLog("done log", (l) => l.message === "request done" && l.id === accepted.id, 1000);
        assert.equal(done.route, "crash");
        assert.equal(done.finishReason, "length");
        await sleep(1000);
        assert.equal(client.received.filter((m) => m.topic === "crash/one/out").length, 1, "exactly one answer");
    });
});
