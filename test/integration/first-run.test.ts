/**
 * Issue 6, first run without a broker: the daemon says once, clearly, what is missing, keeps
 * retrying with backoff, serves nothing meanwhile, and comes online when a broker appears.
 */
import assert from "node:assert/strict";
import {after, before, describe, it} from "node:test";
import {freePort, startBroker, type Broker} from "../support/broker.js";
import {spawnDaemon, tempDir, type DaemonProcess} from "../support/daemon.js";
import {TestClient} from "../support/mqtt-client.js";
import {modelFile} from "../support/models.js";

describe("first run without a broker", () => {
    let port: number;
    let daemon: DaemonProcess;
    let broker: Broker | null = null;
    let state: {path: string; dispose: () => Promise<void>};

    before(async () => {
        port = await freePort();
        state = await tempDir("qe-first-run-");
        daemon = spawnDaemon({brokerUrl: `mqtt://127.0.0.1:${port}`, modelPath: await modelFile("scripted"), deviceId: "first-run",
            stateDir: state.path});
    });

    after(async () => {
        await daemon?.kill();
        await broker?.dispose();
        await state?.dispose();
    });

    it("says once what to install or configure, and keeps retrying with growing delays", async () => {
        await daemon.waitForLog("reconnect attempt 5", (l) => l.message === "mqtt reconnect scheduled" && l.attempt === 5, 30_000);
        const problems = daemon.logs.filter((l) => l.message === "mqtt connection problem");
        assert.equal(problems.length, 1, `one line, not one per attempt: ${JSON.stringify(problems)}`);
        assert.equal(problems[0]?.code, "broker_unreachable");
        assert.equal(problems[0]?.reason, `no MQTT broker is listening at mqtt://127.0.0.1:${port}: install one (sudo apt-get install mosquitto) or set mqtt.url to your broker`);
        assert.ok(!daemon.stdout().includes("\"ECONNREFUSED\""), "no bare ECONNREFUSED code");
        const delays = daemon.logs.filter((l) => l.message === "mqtt reconnect scheduled").map((l) => Number(l.inMs));
        assert.ok((delays[2] ?? 0) > (delays[0] ?? 0) * 2 && delays.every((ms) => ms <= 1200), `backoff 200 -> 1000 ms: ${delays.join(", ")}`);
        assert.equal(daemon.child.exitCode, null);
    });

    it("comes online by itself once a broker listens on that port", async () => {
        broker = await startBroker({port});
        const client = await TestClient.connect(broker.url);
        try {
            await client.subscribe("qwen-edge/first-run/status");
            await client.waitFor("first-run online", (m) => m.json?.state === "online", 15_000);
            assert.ok(daemon.logs.some((l) => l.message === "mqtt connected"));
            assert.equal(daemon.logs.filter((l) => l.level === "error").length, 1, "no new error once the broker is there");
        } finally {
            await client.close();
        }
    });
});
