#!/usr/bin/env node
/**
 * `npm run bench`: what qwen-edge costs on top of node-llama-cpp, measured side by side on one
 * machine and one model. Raw and daemon runs alternate (and the order flips every round) so that
 * other work on a shared machine hits both alike; the figures that matter are ratios of adjacent runs.
 * bench/README.md explains every figure.
 */
import {existsSync, mkdirSync, statSync, writeFileSync} from "node:fs";
import {dirname, join, resolve} from "node:path";
import {fileURLToPath} from "node:url";
import {startBroker, type Broker} from "../test/support/broker.js";
import {knownArgs, loadConfig} from "../src/config.js";
import {writeTinyQwen35} from "../src/testing/tiny-qwen35.js";
import {nodeLlamaCppVersion, packageVersion} from "../src/version.js";
import {BenchClient, BenchDaemon, mqttRound, type MqttRound, type MqttSample, type RequestBody} from "./daemon-client.js";
import {parseOptions, USAGE, type BenchOptions} from "./options.js";
import {findPid, LoadMeter, machineInfo, mappedFileRssBytes, processCpuSeconds, processMemory, type LoadWindow} from "./proc.js";
import {RawProcess} from "./raw-process.js";
import type {GenerationSettings, RawRound, RawSample} from "./raw.js";
import {buildResult, renderTable, type Collected} from "./report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PROMPT = "Write a short story about a small robot that reads sensor messages on an edge device and answers them.";
const HEALTH_ARG = "telemetry-interval-seconds";
const WARM_TOKENS = 16;

const say = (line: string): void => {
    process.stdout.write(`${line}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function benchModel(o: BenchOptions): Promise<{path: string; generated: boolean}> {
    if (o.model !== null) return {path: resolve(o.model), generated: false};
    const path = join(ROOT, "bench", "cache", `bench-qwen35-h256-l8-endless-s${o.seed}.gguf`);
    if (!existsSync(path)) {
        mkdirSync(dirname(path), {recursive: true});
        say(`generating ${path}`);
        await writeTinyQwen35(path, {kind: "endless", hidden: 256, layers: 8, seed: o.seed, name: "qwen-edge benchmark"});
    }
    return {path, generated: true};
}

/** test/support/broker.ts spawns `mosquitto` from /usr/sbin or PATH; a missing one would only fail with ENOENT. */
function hasMosquitto(): boolean {
    const dirs = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", ...(process.env.PATH ?? "").split(":")];
    return dirs.some((d) => d !== "" && existsSync(join(d, "mosquitto")));
}

async function main(): Promise<void> {
    if (process.argv.includes("--help")) {
        process.stdout.write(USAGE);
        return;
    }
    let o: BenchOptions;
    try {
        o = parseOptions(process.argv.slice(2));
    } catch (err) {
        process.stderr.write(`${(err as Error).message}\n${USAGE}`);
        process.exitCode = 2;
        return;
    }
    const began = Date.now();
    const defaults = loadConfig({args: [], env: {}}).inference;
    const model = await benchModel(o);
    const settings: GenerationSettings = {
        modelPath: model.path, threads: o.threads, contextSize: defaults.contextSize, batchSize: defaults.batchSize,
        parallel: o.parallel, maxTokens: o.maxTokens, prompt: PROMPT, systemPrompt: defaults.systemPrompt, seed: o.seed,
        topP: defaults.topP, topK: defaults.topK
    };
    const healthSupported = knownArgs().has(HEALTH_ARG);
    const daemonArgs = [
        "--inference-threads", String(o.threads), "--inference-parallel", String(o.parallel),
        "--inference-context-size", String(settings.contextSize), "--inference-batch-size", String(settings.batchSize),
        "--inference-temperature", "0", "--inference-presence-penalty", "0", "--log-level", "info"
    ];
    const profileDir = join(ROOT, "bench", "results", "profiles");
    const nodeFlags = [...o.daemonNodeFlags, ...(o.cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [])];
    const notes: string[] = [];
    if (!healthSupported) notes.push(`this build has no --${HEALTH_ARG}: the health-at-1s comparison was skipped`);

    if (!hasMosquitto()) {
        process.stderr.write("bench: the mosquitto binary is needed (sudo apt-get install mosquitto)\n");
        process.exitCode = 1;
        return;
    }
    let broker: Broker | null = null;
    const raw = new RawProcess(settings);
    const daemons: BenchDaemon[] = [];
    const clients: BenchClient[] = [];
    try {
        broker = await startBroker();
        const brokerPid = findPid(join(broker.dir, "mosquitto.conf"));
        const pidOf = (p: {pid: number}): number[] => {
            try {
                return [p.pid];
            } catch {
                return []; // not running
            }
        };
        const ours = (): number[] => [...daemons.flatMap(pidOf), ...pidOf(raw), ...(brokerPid ? [brokerPid] : [])];
        const load: Record<string, LoadWindow> = {};
        const measureLoad = async <T>(phase: string, work: () => Promise<T>): Promise<T> => {
            const meter = new LoadMeter(ours);
            const out = await work();
            load[phase] = meter.stop();
            return out;
        };
        const brokerUrl = broker.url;
        const suffix = Math.random().toString(16).slice(2, 8);
        const newDaemon = (name: string, extra: string[], flags: string[]): BenchDaemon =>
            new BenchDaemon({brokerUrl, modelPath: model.path, deviceId: `bench-${name}-${suffix}`, args: [...daemonArgs, ...extra], nodeFlags: flags});

        say(`raw: loading ${model.path} (threads ${o.threads}, parallel ${o.parallel})`);
        await raw.start();
        await raw.round(1);
        await raw.round(o.parallel);

        const startupMs: number[] = [];
        const startupParts: Array<ReturnType<BenchDaemon["startupBreakdown"]>> = [];
        const startDaemon = async (d: BenchDaemon): Promise<void> => {
            startupMs.push(await d.start());
            startupParts.push(d.startupBreakdown());
        };
        const a = newDaemon("default", [], nodeFlags);
        daemons.push(a);
        await startDaemon(a);
        // The health comparison has its own pair, both used equally often: health every N s (b) and
        // the default (b0). Compared with the much busier daemon a, b came out slower even with the
        // default interval.
        let b: BenchDaemon | null = null;
        let b0: BenchDaemon | null = null;
        if (healthSupported) {
            b = newDaemon("health", [`--${HEALTH_ARG}`, String(o.healthInterval)], nodeFlags);
            b0 = newDaemon("health-base", [], nodeFlags);
            for (const d of [b, b0]) {
                daemons.push(d);
                await startDaemon(d);
            }
        }
        for (let i = 0; i < o.parallel; i++) clients.push(await BenchClient.connect(brokerUrl, `c${i}-${suffix}`));
        const c0 = clients.slice(0, 1);
        const body = (stream: boolean, maxTokens = o.maxTokens): RequestBody => ({prompt: PROMPT, maxTokens, stream, seed: o.seed});
        // First generations are 10-30 % slower (docs/DESIGN.md): warm every path before measuring.
        for (const d of [a, b, b0]) {
            if (!d) continue;
            await mqttRound(c0, d.layout.request, body(false));
            await mqttRound(c0, d.layout.request, body(true));
            await mqttRound(clients, d.layout.request, body(true));
        }

        const cells: Collected["cells"] = {raw1: [], off1: [], on1: [], health1: [], healthBase: [], rawP: [], offP: [], onP: []};
        interface Step {
            cell: keyof Collected["cells"];
            /** the process that generates in this cell */
            pid: () => number;
            run: () => Promise<RawRound | MqttRound>;
            /**
             * A short untimed generation on the same path first: a process that has not generated
             * for a few seconds starts measurably slower (caches, idle threads), and the cells do not
             * run equally often, so each cell starts warm.
             */
            warm: () => Promise<unknown>;
        }
        const rawStep = (cell: Step["cell"], n: number): Step =>
            ({cell, pid: () => raw.pid, run: () => raw.round(n), warm: () => raw.generate(WARM_TOKENS)});
        const daemonStep = (cell: Step["cell"], d: BenchDaemon, cs: BenchClient[], stream: boolean): Step =>
            ({cell, pid: () => d.pid, run: () => mqttRound(cs, d.layout.request, body(stream)),
                warm: () => mqttRound(c0, d.layout.request, body(false, WARM_TOKENS))});
        const steps: Step[] = [
            rawStep("raw1", 1),
            daemonStep("off1", a, c0, false),
            daemonStep("on1", a, c0, true),
            ...(b && b0 ? [daemonStep("health1", b, c0, false), daemonStep("healthBase", b0, c0, false)] : []),
            rawStep("rawP", o.parallel),
            daemonStep("offP", a, clients, false),
            daemonStep("onP", a, clients, true)
        ];
        const roundLoad: LoadWindow[] = [];
        for (let r = 0; r < o.rounds; r++) {
            const meter = new LoadMeter(ours);
            // Flip the order every round so a drift in machine load does not favour one side.
            for (const step of r % 2 === 0 ? steps : [...steps].reverse()) {
                await step.warm();
                // CPU time of the generating process per token: less moved by other load than tokens/s.
                const cpuBefore = processCpuSeconds(step.pid());
                const result = await step.run();
                result.cpuSeconds = processCpuSeconds(step.pid()) - cpuBefore;
                (cells[step.cell] as Array<RawRound | MqttRound>).push(result);
            }
            const w = meter.stop();
            roundLoad.push(w);
            say(`round ${r + 1}/${o.rounds}: raw ${cells.raw1.at(-1)!.tokensPerSecond.toFixed(0)} tok/s, daemon stream off `
                + `${cells.off1.at(-1)!.tokensPerSecond.toFixed(0)}, on ${cells.on1.at(-1)!.tokensPerSecond.toFixed(0)} `
                + `(other load ${w.otherCores} cores)`);
        }

        const latency = await measureLoad("latency", async () => {
            const rawSamples: RawSample[] = [];
            const mqttSamples: MqttSample[] = [];
            for (let i = 0; i < o.latencyPairs; i++) {
                rawSamples.push(await raw.generate(o.latencyMaxTokens));
                await sleep(20);
                mqttSamples.push((await mqttRound(c0, a.layout.request, body(true, o.latencyMaxTokens))).samples[0]!);
                await sleep(20);
            }
            return {raw: rawSamples, mqtt: mqttSamples};
        });

        say(`idle: ${o.idleSeconds} s`);
        await sleep(2000); // let the last reply's bookkeeping (journal `done`, GC) finish first
        // The raw process idles through the same window: node-llama-cpp alone, in the same state.
        const idleAll = await measureLoad("idle", async () => {
            const watched = [raw, a, ...(b && b0 ? [b, b0] : [])];
            const before = watched.map((d) => processCpuSeconds(d.pid));
            const t0 = Date.now();
            await sleep(o.idleSeconds * 1000);
            const seconds = (Date.now() - t0) / 1000;
            return watched.map((d, i) => ({
                cpuPercent: (100 * (processCpuSeconds(d.pid) - before[i]!)) / seconds, seconds,
                memory: processMemory(d.pid), modelRssBytes: mappedFileRssBytes(d.pid, model.path)
            }));
        });
        const rawIdle = idleAll[0] ?? null;
        const idle = idleAll.slice(1);

        for (const c of clients.splice(0)) await c.close();
        for (const d of daemons.splice(0).reverse()) {
            await d.stop();
            d.dispose();
        }
        for (let i = 0; i < o.startupRuns; i++) {
            const d = newDaemon(`start${i}`, [], []);
            try {
                await startDaemon(d);
            } finally {
                await d.stop();
                d.dispose();
            }
        }

        const collected: Collected = {
            options: o, settings, healthSupported, cells, latency, roundLoad, load, idle, startupMs, startupParts, rawIdle,
            modelBytes: statSync(model.path).size, modelGenerated: model.generated, notes,
            versions: {node: process.version, nodeLlamaCpp: nodeLlamaCppVersion(), qwenEdge: packageVersion()},
            machine: machineInfo(), durationSeconds: 0, profiles: o.cpuProf ? profileDir : null
        };
        collected.durationSeconds = Math.round((Date.now() - began) / 1000);
        const result = buildResult(collected);
        const out = o.out !== null ? resolve(o.out) : join(ROOT, "bench", "results", "latest.json");
        mkdirSync(dirname(out), {recursive: true});
        writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
        say("");
        say(renderTable(result));
        say(`\nwritten ${out} (${collected.durationSeconds} s)`);
    } finally {
        for (const c of clients) await c.close().catch(() => undefined);
        for (const d of daemons) {
            await d.stop().catch(() => undefined);
            d.dispose();
        }
        await raw.stop().catch(() => undefined);
        await broker?.dispose();
    }
}

main().catch((err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
});
