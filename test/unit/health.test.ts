/**
 * Health snapshots against a recorded Raspberry Pi tree (temperature, get_throttled in sysfs, a
 * cgroup memory limit), the same Pi with `vcgencmd get_throttled` instead of sysfs, and this
 * machine's real /proc and /sys; then the whole telemetry part publishing through an in-memory link.
 */
import assert from "node:assert/strict";
import {mkdtemp, rm, writeFile} from "node:fs/promises";
import os from "node:os";
import {join} from "node:path";
import {performance} from "node:perf_hooks";
import {fileURLToPath} from "node:url";
import {after, before, describe, it} from "node:test";
import {loadConfig} from "../../src/config.js";
import {topicLayout} from "../../src/mqtt/topics.js";
import {probeDevice} from "../../src/system/probe.js";
import {decodeThrottled, parseThrottled, ThrottleReader} from "../../src/system/throttle.js";
import {HostSampler, type HealthMessage} from "../../src/telemetry/health.js";
import type {InfoMessage} from "../../src/telemetry/info.js";
import {StatusReporter} from "../../src/telemetry/status.js";
import {Telemetry} from "../../src/telemetry/telemetry.js";
import {FakeLink, memoryLogger} from "../support/fake-link.js";
import {assertHealthShape} from "../support/health-shape.js";
import {EventBus} from "../../src/events.js";

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/sysfs/", import.meta.url));
const PI_HOT = join(FIXTURES, "pi4-throttled");
const PI = join(FIXTURES, "pi4-4gb");

void describe("get_throttled decoding", () => {
    const table: Array<[string, number | null]> = [
        ["throttled=0x50005\n", 0x50005], ["throttled=0x0", 0], ["e0008\n", 0xe0008], ["0x80000", 0x80000],
        ["", null], ["throttled=", null], ["error=1 error_msg=\"Command not registered\"", null]
    ];
    for (const [text, word] of table) {
        void it(`parses ${JSON.stringify(text)} as ${word === null ? "nothing" : `0x${word.toString(16)}`}`, () => {
            assert.equal(parseThrottled(text), word);
        });
    }

    void it("decodes 0x50005: under-voltage and throttled, now and since boot", () => {
        const s = decodeThrottled(0x50005, "vcgencmd");
        assert.equal(s.raw, "0x50005");
        assert.deepEqual(s.now, {underVoltage: true, frequencyCapped: false, throttled: true, softTemperatureLimit: false, any: true});
        assert.deepEqual(s.sinceBoot, {underVoltage: true, frequencyCapped: false, throttled: true, softTemperatureLimit: false, any: true});
    });

    void it("decodes 0x80000 as a soft temperature limit in the past only", () => {
        const s = decodeThrottled(0x80000, "sysfs");
        assert.equal(s.now.any, false);
        assert.deepEqual(s.sinceBoot, {underVoltage: false, frequencyCapped: false, throttled: false, softTemperatureLimit: true, any: true});
    });
});

void describe("host sampler", () => {
    let disk: string;
    before(async () => {
        disk = await mkdtemp(join(os.tmpdir(), "qe-health-"));
    });
    after(async () => {
        await rm(disk, {recursive: true, force: true});
    });

    void it("reads every field of the recorded hot Raspberry Pi 4, throttle bits from sysfs", async () => {
        const facts = await probeDevice({root: PI_HOT});
        const sampler = new HostSampler({root: PI_HOT, diskPaths: [disk], facts, throttle: new ThrottleReader({root: PI_HOT})});
        await sampler.sample();
        const s = await sampler.sample();
        assert.deepEqual({...s.memory, processRssBytes: 0}, {
            totalBytes: 3882728 * 1024, availableBytes: 1804312 * 1024, freeBytes: 402112 * 1024,
            swapTotalBytes: 102396 * 1024, swapFreeBytes: 102396 * 1024, processRssBytes: 0,
            cgroupLimitBytes: 3221225472, cgroupUsageBytes: 1610612736, cgroupHeadroomBytes: 3221225472 - (1610612736 - 268435456)
        });
        assert.ok(s.memory.processRssBytes > 0);
        assert.equal(s.cpu.cores, 4);
        assert.equal(s.cpu.available, 4);
        assert.deepEqual([s.cpu.load1, s.cpu.load5, s.cpu.load15], [3.92, 3.41, 2.1]);
        assert.equal(s.cpu.temperatureC, 82.8);
        assert.equal(s.cpu.usagePercent, null, "a recorded /proc/stat does not move: no usage between two samples");
        assert.equal(typeof s.cpu.processPercent, "number");
        assert.deepEqual(s.cpu.throttling, {
            raw: "0xe0008", source: "sysfs",
            now: {underVoltage: false, frequencyCapped: false, throttled: false, softTemperatureLimit: true, any: true},
            sinceBoot: {underVoltage: false, frequencyCapped: true, throttled: true, softTemperatureLimit: true, any: true}
        });
        assert.equal(s.disk?.path, disk);
        assert.ok((s.disk?.freeBytes ?? 0) > 0 && (s.disk?.totalBytes ?? 0) >= (s.disk?.freeBytes ?? 0));
    });

    void it("decodes a recorded `vcgencmd get_throttled` (throttled=0x50005) when sysfs has no get_throttled, running it once per interval", async () => {
        let calls = 0;
        const runVcgencmd = async (): Promise<string> => {
            calls++;
            return "throttled=0x50005\n";
        };
        const throttle = new ThrottleReader({root: PI, runVcgencmd, commandIntervalMs: 60_000});
        assert.equal(await throttle.detect(), "vcgencmd");
        const sampler = new HostSampler({root: PI, diskPaths: [disk], facts: await probeDevice({root: PI}), throttle});
        const [a, b] = await Promise.all([sampler.sample(), sampler.sample()]);
        const c = await sampler.sample();
        assert.equal(calls, 1, "the command ran once for three samples inside its interval");
        for (const s of [a, b, c]) {
            assert.equal(s.cpu.throttling?.source, "vcgencmd");
            assert.equal(s.cpu.throttling?.raw, "0x50005");
            assert.equal(s.cpu.throttling?.now.underVoltage, true);
            assert.equal(s.cpu.throttling?.now.throttled, true);
            assert.equal(s.cpu.throttling?.now.frequencyCapped, false);
            assert.equal(s.cpu.throttling?.sinceBoot.underVoltage, true);
        }
        assert.equal(c.cpu.temperatureC, 48.7);
        assert.equal(c.memory.cgroupLimitBytes, null, "memory.max is max: no cgroup limit");
        assert.equal(typeof c.memory.cgroupUsageBytes, "number");
    });

    void it("reports no throttling where there is neither sysfs get_throttled nor vcgencmd", async () => {
        const throttle = new ThrottleReader({root: PI});
        // This machine is no Raspberry Pi; if vcgencmd were installed the answer would differ.
        const source = await throttle.detect();
        if (source === null) assert.equal(await throttle.read(), null);
    });

    void it("reads this machine's real /proc and /sys, cheaply", async (t) => {
        const facts = await probeDevice();
        const sampler = new HostSampler({root: "/", diskPaths: [join(os.tmpdir(), "qe-does-not-exist"), os.tmpdir()], facts, throttle: new ThrottleReader()});
        await sampler.sample();
        const elu0 = performance.eventLoopUtilization();
        const started = performance.now();
        const rounds = 20;
        let s = await sampler.sample();
        for (let i = 1; i < rounds; i++) s = await sampler.sample();
        const wallMs = (performance.now() - started) / rounds;
        const busyMs = performance.eventLoopUtilization(elu0).active / rounds;
        t.diagnostic(`one host sample: ${wallMs.toFixed(2)} ms wall, ${busyMs.toFixed(2)} ms of event-loop time`);
        assert.equal(s.memory.totalBytes, os.totalmem());
        assert.ok(s.memory.availableBytes > 0 && s.memory.availableBytes <= s.memory.totalBytes);
        assert.equal(s.cpu.cores, os.cpus().length);
        assert.ok(s.cpu.load1 >= 0);
        assert.ok(s.cpu.usagePercent === null || (s.cpu.usagePercent >= 0 && s.cpu.usagePercent <= 100), String(s.cpu.usagePercent));
        assert.ok(s.cpu.temperatureC === null || typeof s.cpu.temperatureC === "number");
        assert.equal(s.disk?.path, os.tmpdir(), "the first directory that exists");
        assert.ok(s.disk !== null && s.disk.freeBytes > 0);
    });
});

void describe("telemetry part over an in-memory link", () => {
    let dir: string;
    before(async () => {
        dir = await mkdtemp(join(os.tmpdir(), "qe-telemetry-"));
        await writeFile(join(dir, "tiny.gguf"), Buffer.alloc(4096));
    });
    after(async () => {
        await rm(dir, {recursive: true, force: true});
    });

    void it("publishes typed health with an expiry, degrades and pauses a hot Pi, and publishes info", async () => {
        const config = loadConfig({env: {}, args: ["--device-id", "pi-hot", "--model-dir", dir, "--state-dir", dir,
            "--telemetry-interval-seconds", "1", "--telemetry-pause-when-hot"]});
        const layout = topicLayout(config.mqtt.baseTopic, config.device.id, config.mqtt.fleetGroup);
        const link = new FakeLink();
        const {log} = memoryLogger();
        const status = new StatusReporter({log, topic: layout.status, link});
        const paused: boolean[] = [];
        const events = new EventBus(log);
        const telemetry = new Telemetry({
            log, config, layout, link, status, events, threads: 1,
            limits: {maxPayloadBytes: 65536, maxTokensCap: 2048, defaultMaxTokens: 256, maxTimeoutMs: 600000, defaultTimeoutMs: 120000, maxStopSequences: 8, maxIdLength: 128},
            parts: {
                scheduler: {stats: () => ({queued: 2, running: 1, completed: 0, expired: 0, rejected: 0, avgJobMs: null, paused: paused.at(-1) ?? false})},
                engine: {stats: () => ({modelPath: join(dir, "tiny.gguf"), contextSize: 4096, threads: 1, parallel: 1, busySequences: 1,
                    promptCache: {hits: 0, misses: 0, reusedTokens: 0, checkpointBytes: 0}})},
                jobs: {stats: () => ({pending: 0, damagedAtStart: 0})},
                conversations: {stats: () => ({count: 0, tokens: 0, evicted: 0, storageErrors: 0})}
            },
            setPaused: (p) => paused.push(p), root: PI_HOT
        });
        await telemetry.start();
        // what the pipeline and the daemon announce on the bus
        events.emit("modelState", {state: "ready", name: "tiny", path: join(dir, "tiny.gguf"), plan: null, reason: null});
        events.emit("generationDone", {id: "a", promptTokens: 20, completionTokens: 41, thinkingTokens: 0, cachedPromptTokens: 0, ttftMs: 100, totalMs: 1100});
        events.emit("requestError", {id: "b", code: "queue_full"});
        events.emit("requestError", {id: "c", code: "timeout"});
        await status.set("online");
        try {
            // the first snapshot may predate the events: the next one (1 s) has them
            const first = await link.waitFor("a health snapshot with the announced generation", layout.health,
                (p) => (JSON.parse(p.payload) as HealthMessage).inference.completed === 1);
            assert.equal(first.options.qos, 0);
            assert.equal(first.options.retain, true);
            assert.equal(first.options.properties?.messageExpiryInterval, 2);
            const health: HealthMessage = assertHealthShape(JSON.parse(first.payload));
            assert.equal(health.device, "pi-hot");
            assert.equal(health.cpu.temperatureC, 82.8);
            assert.equal(health.cpu.throttling?.now.softTemperatureLimit, true);
            assert.deepEqual({queued: health.inference.queued, running: health.inference.running, completed: health.inference.completed,
                failed: health.inference.failed, rejected: health.inference.rejected, tokensGenerated: health.inference.tokensGenerated,
                last: health.inference.tokensPerSecond.last, p50: health.inference.ttftMs.p50},
            {queued: 2, running: 1, completed: 1, failed: 1, rejected: 1, tokensGenerated: 41, last: 40, p50: 100});
            // MemAvailable 1,847,615,488 − 5 % of MemTotal (194 MiB) vs cgroup headroom 1,879,048,192 − 5 % of 3 GiB (154 MiB)
            assert.equal(health.memory.budgetBytes, Math.min(1804312 * 1024 - Math.round(3882728 * 1024 * 0.05), 1879048192 - Math.round(3221225472 * 0.05)));

            await link.waitFor("status degraded by heat", layout.status, (p) => (JSON.parse(p.payload) as {state: string}).state === "degraded");
            const degraded = status.status;
            assert.equal(degraded.state, "degraded");
            assert.deepEqual(degraded.conditions, ["thermal"]);
            assert.match(degraded.reason ?? "", /temperature at or above 80 °C/);
            assert.match(degraded.reason ?? "", /soft temperature limit/);
            assert.equal(paused.at(-1), true, "new work paused while hot");

            const info = JSON.parse((await link.waitFor("retained info naming the model", layout.info,
                (p) => (JSON.parse(p.payload) as InfoMessage).model.name === "tiny")).payload) as InfoMessage;
            assert.equal(link.on(layout.info)[0]?.options.retain, true);
            assert.equal(info.deviceFacts?.board, "Raspberry Pi 4 Model B Rev 1.4");
            assert.equal(info.deviceFacts?.cpu.cores, 4);
            assert.equal(info.model.name, "tiny");
            assert.equal(info.model.sizeBytes, 4096);
            assert.equal(info.limits.contextSize, 4096);
            assert.equal(info.limits.maxQueue, config.inference.maxQueue);
            assert.equal((info.requestSchema as {$id: string}).$id, "urn:qwen-edge:request:v1");
            assert.match(info.versions.qwenEdge, /^\d+\.\d+\.\d+/);

            // A second tick a second later; the unchanged info is not published again (once at start, once for the model).
            const infos = link.on(layout.info).length;
            await link.waitFor("second health", layout.health, (p) => p !== first, 3000);
            assert.equal(link.on(layout.info).length, infos, "info is republished only on change or reconnect");
            assert.ok(infos <= 2, `${infos} info messages`);
        } finally {
            await telemetry.stop();
        }
    });
});
