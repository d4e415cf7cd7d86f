#!/usr/bin/env node
/**
 * `npm run bench:reuse`: what prompt reuse saves a user (issue 15, docs/PROMPT-REUSE.md), through the daemon
 * on the project's real-shape Qwen3.5-0.8B (test/support/scale.ts: published dimensions and vocabulary, random
 * weights). Three measurements:
 * - a shared system prompt: the first request with a ~1,000-token system prompt, then another request with
 *   the same system prompt and a new question; time to first token of each (target: second <= 10 % of first);
 * - a conversation: five turns of ~200-token prompts, then the same history sent whole as `messages` to a
 *   daemon without reuse; turn 5's time to first token beside the cold one (target: <= 20 %);
 * - memory: the checkpoint memory the daemon reports and its peak RSS, beside what the plan counts.
 * Writes bench/results/reuse-latest.json.
 */
import {mkdirSync, writeFileSync} from "node:fs";
import {availableParallelism, cpus, loadavg} from "node:os";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import type {ModelVariant} from "../src/models/catalog.js";
import {nodeLlamaCppVersion} from "../src/version.js";
import {startBroker} from "../test/support/broker.js";
import {runCli, spawnDaemon, tempDir, type DaemonProcess} from "../test/support/daemon.js";
import {TestClient} from "../test/support/mqtt-client.js";
import {SCALE_MODEL_DIR, scaleModel, wordsForTokens, words} from "../test/support/scale.js";
import {processMemory} from "./proc.js";
import {median} from "./stats.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const USAGE = `usage: npm run bench:reuse -- [options]
  --variant V         0.8b or 2b (default 0.8b)
  --threads N         generation threads (default: every CPU, ${availableParallelism()} here)
  --reps N            repetitions of the shared-system-prompt pair, median reported (default 3)
  --system-tokens N   the shared system prompt (default 1000)
  --turn-tokens N     each conversation turn's prompt (default 200)
  --turns N           conversation turns (default 5)
  --out FILE          (default bench/results/reuse-latest.json)
`;

interface Options {
    variant: ModelVariant;
    threads: number;
    reps: number;
    systemTokens: number;
    turnTokens: number;
    turns: number;
    out: string;
}

function parseOptions(argv: string[]): Options {
    const o: Options = {variant: "0.8b", threads: availableParallelism(), reps: 3, systemTokens: 1000, turnTokens: 200, turns: 5,
        out: join(ROOT, "bench", "results", "reuse-latest.json")};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const value = (): string => {
            const v = argv[++i];
            if (v === undefined) throw new Error(`${a} needs a value`);
            return v;
        };
        const int = (): number => {
            const n = Number(value());
            if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer`);
            return n;
        };
        if (a === "--variant") o.variant = value().trim().toLowerCase() as ModelVariant;
        else if (a === "--threads") o.threads = int();
        else if (a === "--reps") o.reps = int();
        else if (a === "--system-tokens") o.systemTokens = int();
        else if (a === "--turn-tokens") o.turnTokens = int();
        else if (a === "--turns") o.turns = int();
        else if (a === "--out") o.out = value();
        else throw new Error(`unknown option ${a}`);
    }
    return o;
}

type Reply = Record<string, unknown> & {text: string; usage: {promptTokens: number; cachedPromptTokens: number; completionTokens: number};
    timing: {ttftMs: number}};

interface Daemon {
    base: string;
    process: DaemonProcess;
    ask(body: Record<string, unknown>): Promise<Reply>;
    stop(): Promise<void>;
}

const CONTEXT_SIZE = 4096;

async function startDaemon(device: string, o: Options, brokerUrl: string, client: TestClient, extra: string[]): Promise<Daemon> {
    const base = `qwen-edge/${device}`;
    await client.subscribe(`${base}/#`);
    const state = await tempDir("qe-bench-reuse-");
    const daemon = spawnDaemon({brokerUrl, modelPath: "", deviceId: device, stateDir: state.path, args: [...modelArgs(o),
        "--inference-threads", String(o.threads), "--inference-context-size", String(CONTEXT_SIZE), "--inference-temperature", "0",
        "--inference-max-payload-bytes", "262144", "--inference-max-timeout-ms", "3600000", "--log-level", "info", ...extra]});
    await Promise.race([
        client.waitFor(`${device} online`, (m) => m.topic === `${base}/status` && m.json?.state === "online", 600_000),
        daemon.exited.then((e) => { throw new Error(`the daemon exited (${e.code ?? e.signal}) before online: ${daemon.stderr().slice(-800)}`); })
    ]);
    let n = 0;
    return {
        base, process: daemon,
        ask: async (body) => {
            const id = `${device}-${++n}`;
            await client.publish(`${base}/request`, JSON.stringify({id, thinking: false, timeoutMs: 3_600_000, ...body}));
            const reply = (await client.waitFor(`reply ${id}`, (m) => m.topic === `${base}/response` && m.json?.id === id, 3_600_000)).json!;
            if (reply.status !== "ok") throw new Error(`request ${id} failed: ${JSON.stringify(reply).slice(0, 400)}`);
            return reply as Reply;
        },
        stop: async () => {
            await daemon.term();
            await state.dispose();
        }
    };
}

function modelArgs(o: Options): string[] {
    return ["--model-dir", SCALE_MODEL_DIR, "--model-variant", o.variant, "--model-quants", "Q4_K_M", "--model-download", "false"];
}

/** `wordCount` words of the cycle behind a tag, so that texts differ from their first token. */
function text(wordCount: number, shift: number, tag: string): string {
    return `${tag}: ${words(wordCount, shift)}`;
}

async function main(): Promise<void> {
    if (process.argv.includes("--help")) return void process.stdout.write(USAGE);
    let o: Options;
    try {
        o = parseOptions(process.argv.slice(2));
    } catch (err) {
        process.stderr.write(`${(err as Error).message}\n${USAGE}`);
        process.exitCode = 2;
        return;
    }
    const say = (line: string): void => void process.stdout.write(`${line}\n`);
    const startLoad = loadavg()[0] ?? 0;
    await scaleModel(o.variant, "Q4_K_M");
    const plan = runCli(["plan", "--json", ...modelArgs(o), "--inference-context-size", String(CONTEXT_SIZE)]);
    await plan.exited;
    // the choice names the model; its figures (checkpointBytes included) are the matching candidate's
    const parsedPlan = JSON.parse(plan.stdout()) as {choice: {variant: string; quant: string};
        candidates: Array<{variant: string; quant: string; requiredBytes: number; checkpointBytes: number}>};
    const planned = parsedPlan.candidates.find((c) => c.variant === parsedPlan.choice.variant && c.quant === parsedPlan.choice.quant);
    if (!planned) throw new Error(`plan --json lists no candidate for its choice ${parsedPlan.choice.variant} ${parsedPlan.choice.quant}`);
    const broker = await startBroker();
    const client = await TestClient.connect(broker.url);
    const warm = await startDaemon("bench-reuse", o, broker.url, client, []);
    const cold = await startDaemon("bench-reuse-off", o, broker.url, client, ["--inference-prompt-checkpoints", "0"]);
    try {
        await warm.ask({prompt: "Hi", maxTokens: 8});
        await cold.ask({prompt: "Hi", maxTokens: 8});
        // tokens per word of this text under the chat template, measured by the daemon's own refusal
        const wordsFor = async (tokens: number): Promise<number> => wordsForTokens(client, `${warm.base}/request`, `${warm.base}/response`, tokens, CONTEXT_SIZE);
        const systemWords = await wordsFor(o.systemTokens);
        const turnWords = Math.max(8, Math.round(systemWords * o.turnTokens / o.systemTokens));

        // 1. a shared system prompt: each rep a new one (a miss), then the same one with another question (a hit)
        const pairs: Array<{first: Reply; second: Reply}> = [];
        for (let r = 0; r < o.reps; r++) {
            const system = text(systemWords, r, `household ${r}`);
            const first = await warm.ask({system, prompt: "Is the kitchen light on?", maxTokens: 8});
            const second = await warm.ask({system, prompt: "Which window is open?", maxTokens: 8});
            pairs.push({first, second});
            say(`  system prompt ${first.usage.promptTokens} tok: first ${first.timing.ttftMs} ms (cached ${first.usage.cachedPromptTokens}), ` +
                `second ${second.timing.ttftMs} ms (cached ${second.usage.cachedPromptTokens})`);
        }

        // 2. a conversation of ~turnTokens-token prompts; then its history whole to the daemon without reuse
        const system = "You keep the log of a greenhouse. Answer in one sentence.";
        const history: Array<{role: "user" | "assistant"; content: string}> = [];
        const turns: Reply[] = [];
        for (let t = 0; t < o.turns; t++) {
            const prompt = text(turnWords, t + 3, `entry ${t + 1}`);
            const reply = await warm.ask({conversation: "greenhouse-log", system, prompt, maxTokens: 24});
            turns.push(reply);
            history.push({role: "user", content: prompt}, {role: "assistant", content: reply.text});
            say(`  turn ${t + 1}: prompt ${reply.usage.promptTokens} tok, cached ${reply.usage.cachedPromptTokens}, ttft ${reply.timing.ttftMs} ms`);
        }
        const last = turns.at(-1)!;
        const coldLast = await cold.ask({system, messages: history.slice(0, -1), maxTokens: 24});
        say(`  the same history cold: prompt ${coldLast.usage.promptTokens} tok, ttft ${coldLast.timing.ttftMs} ms; same answer: ${coldLast.text === last.text}`);

        // 3. memory: what checkpoints hold (health) and the peak, beside the plan
        const since = Date.now();
        await client.publish(`${warm.base}/health/refresh`, "", {qos: 0});
        const health = (await client.waitFor("health", (m) => m.topic === `${warm.base}/health` && m.at >= since, 60_000)).json!;
        const checkpointBytes = (health.inference as {promptCache: {checkpointBytes: number}}).promptCache.checkpointBytes;
        const peakRssBytes = processMemory(warm.process.child.pid!).hwmBytes;

        const firstMs = median(pairs.map((p) => p.first.timing.ttftMs)) ?? NaN;
        const secondMs = median(pairs.map((p) => p.second.timing.ttftMs)) ?? NaN;
        const result = {
            sharedSystem: {promptTokens: pairs[0]!.first.usage.promptTokens, firstTtftMs: firstMs, secondTtftMs: secondMs, ratio: secondMs / firstMs,
                cachedTokens: pairs.map((p) => p.second.usage.cachedPromptTokens)},
            conversation: {turns: turns.map((t) => ({promptTokens: t.usage.promptTokens, cachedPromptTokens: t.usage.cachedPromptTokens, ttftMs: t.timing.ttftMs})),
                coldTtftMs: coldLast.timing.ttftMs, coldPromptTokens: coldLast.usage.promptTokens, ratio: last.timing.ttftMs / coldLast.timing.ttftMs,
                sameAnswer: coldLast.text === last.text},
            memory: {checkpointBytes, plannedCheckpointBytes: planned.checkpointBytes, peakRssBytes, planBytes: planned.requiredBytes}
        };
        const report = {date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "unknown", cores: availableParallelism(), nodeLlamaCpp: nodeLlamaCppVersion(),
            loadAverage: {start: startLoad, end: loadavg()[0] ?? 0}, options: {...o, out: undefined}, model: `Qwen3.5-${o.variant.toUpperCase()}-Q4_K_M (real shape)`,
            ...result};
        mkdirSync(dirname(o.out), {recursive: true});
        writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
        const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
        say([
            "",
            `| measurement | cold | warm | warm / cold | target |`,
            `|---|---|---|---|---|`,
            `| shared ${result.sharedSystem.promptTokens}-token system prompt, TTFT | ${firstMs.toFixed(0)} ms | ${secondMs.toFixed(0)} ms | ${(result.sharedSystem.ratio * 100).toFixed(1)} % | <= 10 % |`,
            `| conversation turn ${o.turns} (${last.usage.promptTokens} tokens), TTFT | ${coldLast.timing.ttftMs} ms | ${last.timing.ttftMs} ms | ${(result.conversation.ratio * 100).toFixed(1)} % | <= 20 % |`,
            "",
            `checkpoints held ${mib(checkpointBytes)} (plan counts at most ${mib(planned.checkpointBytes)}); peak RSS ${mib(peakRssBytes)}, plan ${mib(planned.requiredBytes)}`,
            `${o.threads} thread(s); load average ${startLoad.toFixed(2)} -> ${report.loadAverage.end.toFixed(2)}; written to ${o.out}`
        ].join("\n"));
    } finally {
        await warm.stop();
        await cold.stop();
        await client.close();
        await broker.dispose();
    }
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
});
