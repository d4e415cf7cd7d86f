/**
 * Issue 3 end to end: `plan` and `run` make the same choice from the same files; a pinned variant;
 * a download from a local Hugging Face stand-in with progress in the retained status; offline with
 * no file -> degraded, model_unavailable, no exit; nothing fits -> exit 3.
 */
import assert from "node:assert/strict";
import {createReadStream} from "node:fs";
import {copyFile, mkdir, stat, writeFile} from "node:fs/promises";
import {createServer, type Server} from "node:http";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {startBroker, type Broker} from "../support/broker.js";
import {runCli, spawnDaemon, tempDir} from "../support/daemon.js";
import {TestClient} from "../support/mqtt-client.js";
import {writeTinyQwen35} from "../../src/testing/tiny-qwen35.js";

const SIZES = ["0.8B", "2B", "4B", "9B"];
const fileFor = (size: string): string => `Qwen3.5-${size}-Q4_K_M.gguf`;

describe("choosing and provisioning the model", () => {
    let broker: Broker;
    let work: {path: string; dispose: () => Promise<void>};
    let modelsDir: string;
    let client: TestClient;

    before(async () => {
        broker = await startBroker();
        work = await tempDir("qe-choice-");
        modelsDir = join(work.path, "models");
        await mkdir(modelsDir);
        // Tiny stand-ins under the catalog's file names: real qwen35 headers the estimator reads.
        for (const [i, size] of SIZES.entries()) await writeTinyQwen35(join(modelsDir, fileFor(size)), {kind: "scripted", seed: i + 1});
        client = await TestClient.connect(broker.url);
        await client.subscribe("qwen-edge/+/status");
        await client.subscribe("qwen-edge/+/info");
    });
    after(async () => {
        await client?.close();
        await broker?.dispose();
        await work?.dispose();
    });

    const common = (): string[] => ["--model-dir", modelsDir, "--model-download", "false", "--inference-context-size", "1024"];

    it("plan --json and run choose the same model, from the files' headers", async () => {
        const plan = runCli(["plan", "--json", ...common()]);
        assert.equal((await plan.exited).code, 0, plan.stderr());
        const decision = JSON.parse(plan.stdout()) as {choice: {variant: string}; budgetBytes: number;
            candidates: Array<{variant: string; fits: boolean; source: string; requiredBytes: number; reason: string}>};
        assert.equal(decision.choice.variant, "9b");
        assert.equal(decision.candidates.length, 4);
        for (const c of decision.candidates) {
            assert.equal(c.source, "gguf-header", c.reason);
            assert.equal(c.fits, true);
            assert.ok(c.requiredBytes > 0 && c.reason.length > 0);
        }
        const daemon = spawnDaemon({brokerUrl: broker.url, modelPath: "", deviceId: "choice-a", stateDir: join(work.path, "state-a"), args: common()});
        try {
            const loaded = await daemon.waitForLog("model loaded", (l) => l.message === "model loaded");
            assert.equal(loaded.modelPath, join(modelsDir, fileFor("9B")));
            assert.equal(loaded.libuvPool, 1, "the launcher gives libuv one pool thread");
            assert.equal(daemon.logs.some((l) => /libuv's thread pool/.test(String(l.message))), false);
            const info = await client.waitFor("retained info with the decision", (m) => m.topic === "qwen-edge/choice-a/info" &&
                (m.json?.model as {decision?: unknown} | undefined)?.decision != null);
            const model = info.json?.model as {name: string; decision: {choice: {variant: string}}};
            assert.equal(model.name, "Qwen3.5-9B-Q4_K_M");
            assert.equal(model.decision.choice.variant, "9b");
            await client.waitFor("choice-a online", (m) => m.topic === "qwen-edge/choice-a/status" && m.json?.state === "online");
        } finally {
            assert.equal((await daemon.term()).code, 0);
        }
    });

    it("loads a pinned variant", async () => {
        // Also: a UV_THREADPOOL_SIZE from the environment wins over the launcher's, and with more than
        // one generation thread the daemon says why that is slow.
        const daemon = spawnDaemon({brokerUrl: broker.url, modelPath: "", deviceId: "choice-b", stateDir: join(work.path, "state-b"),
            args: [...common(), "--model-variant", "2b", "--inference-threads", "2"], env: {UV_THREADPOOL_SIZE: "3"}});
        try {
            const loaded = await daemon.waitForLog("model loaded", (l) => l.message === "model loaded");
            assert.equal(loaded.modelPath, join(modelsDir, fileFor("2B")));
            assert.equal(loaded.libuvPool, 3);
            const warning = await daemon.waitForLog("the libuv pool warning", (l) => l.level === "warn" && /libuv's thread pool/.test(String(l.message)));
            assert.match(String(warning.message), /UV_THREADPOOL_SIZE=1/);
        } finally {
            await daemon.kill();
        }
    });

    it("exits 3 from plan when nothing fits, naming the smallest requirement", async () => {
        const plan = runCli(["plan", "--memory", "100MiB", ...common()]);
        assert.equal((await plan.exited).code, 3);
        assert.match(plan.stderr(), /smallest model, Qwen3\.5-0\.8B-Q4_K_M, needs/);
    });

    it("offline with no file: degraded with a reason naming the file, requests answered model_unavailable, no exit", async () => {
        const empty = join(work.path, "empty-models");
        const daemon = spawnDaemon({brokerUrl: broker.url, modelPath: "", deviceId: "choice-c", stateDir: join(work.path, "state-c"),
            args: ["--model-dir", empty, "--model-download", "false", "--model-variant", "0.8b", "--log-level", "info"]});
        try {
            const degraded = await client.waitFor("choice-c degraded", (m) => m.topic === "qwen-edge/choice-c/status" && m.json?.state === "degraded");
            const reason = String(degraded.json?.reason);
            assert.match(reason, /Qwen3\.5-0\.8B-Q4_K_M\.gguf/);
            assert.ok(reason.includes(empty), "names the directory");
            assert.ok(reason.length <= 300 && !reason.includes("\n"), `one line of at most 300 characters: ${reason.length}`);
            await client.subscribe("r/choice-c");
            await client.publish("qwen-edge/choice-c/request", JSON.stringify({id: "no-model", prompt: "hi", replyTo: "r/choice-c"}));
            const reply = await client.waitFor("model_unavailable reply", (m) => m.topic === "r/choice-c");
            const error = reply.json?.error as {code: string; message: string};
            assert.equal(error.code, "model_unavailable");
            assert.ok(error.message.length <= 300, `reply message of ${error.message.length} characters`);
            assert.equal(daemon.child.exitCode, null, "still running");
            // An expected condition at info level: the error's text under `error`, no stack trace.
            const failed = await daemon.waitForLog("model failed to load", (l) => l.message === "model failed to load; answering model_unavailable");
            assert.match(String(failed.error), /no model file: place Qwen3\.5-0\.8B-Q4_K_M\.gguf in /);
            assert.deepEqual(daemon.logs.filter((l) => "stack" in l), [], "no stack traces at info level");
            assert.equal(daemon.stdout().includes("    at "), false);
        } finally {
            await daemon.kill();
        }
    });

    it("offline with a smaller model placed by hand: online, the plan's reason in the info, first lines in words", async () => {
        const placed = join(work.path, "placed-models");
        await mkdir(placed);
        await copyFile(join(modelsDir, fileFor("2B")), join(placed, fileFor("2B")));
        const daemon = spawnDaemon({brokerUrl: broker.url, modelPath: "", deviceId: "choice-e", stateDir: join(work.path, "state-e"),
            args: ["--model-dir", placed, "--model-download", "false", "--inference-context-size", "1024"]});
        try {
            const online = await client.waitFor("choice-e online", (m) => m.topic === "qwen-edge/choice-e/status" && m.json?.state === "online", 60_000);
            assert.equal(online.json?.reason, undefined);
            const info = await client.waitFor("choice-e info with the model ready", (m) => m.topic === "qwen-edge/choice-e/info"
                && (m.json?.model as {state?: string} | undefined)?.state === "ready");
            const model = info.json?.model as {name: string; reason: string; decision: {reason: string; downloads: boolean}};
            assert.equal(model.name, "Qwen3.5-2B-Q4_K_M");
            assert.match(model.reason, /^Qwen3\.5-2B-Q4_K_M is the largest present model that fits: .*; Qwen3\.5-9B-Q4_K_M would fit but downloads are off/);
            assert.equal(model.decision.reason, model.reason);
            assert.equal(model.decision.downloads, false);
            const states = client.received.filter((m) => m.topic === "qwen-edge/choice-e/status").map((m) => m.json?.state);
            assert.equal(states.includes("degraded"), false, `never degraded: ${states.join(", ")}`);
            const [first, requests, status] = daemon.logs.filter((l) => l.level === "info");
            assert.deepEqual([first?.message, first?.device], ["qwen-edge starting", "choice-e"]);
            assert.equal(requests?.message, "device \"choice-e\": send requests to qwen-edge/choice-e/request, or to qwen-edge/fleet/request for any device of the fleet");
            assert.match(String(status?.message), /^status is published \(retained\) on qwen-edge\/choice-e\/status/);
            const chosen = await daemon.waitForLog("model chosen", (l) => l.message === "model chosen");
            assert.deepEqual([chosen.model, chosen.reason], ["Qwen3.5-2B-Q4_K_M", model.reason]);
        } finally {
            assert.equal((await daemon.term()).code, 0);
        }
    });

    it("model.path that does not exist or is not a GGUF: exit 2 naming the path, before connecting", async () => {
        const typo = join(work.path, "Qwen3.5-0.8B-Q4_K_N.gguf");
        const missing = spawnDaemon({brokerUrl: broker.url, modelPath: typo, deviceId: "choice-f", stateDir: join(work.path, "state-f")});
        assert.deepEqual(await missing.exited, {code: 2, signal: null});
        assert.equal(missing.stderr(), `qwen-edge: configuration error:\n  model.path: ${typo} does not exist\n`);
        assert.equal(missing.logs.some((l) => l.message === "mqtt connected"), false);
        const page = join(work.path, "page.gguf");
        await writeFile(page, "<!doctype html><title>Not Found</title>\n");
        const notGguf = spawnDaemon({brokerUrl: broker.url, modelPath: page, deviceId: "choice-f", stateDir: join(work.path, "state-f")});
        assert.deepEqual(await notGguf.exited, {code: 2, signal: null});
        assert.match(notGguf.stderr(), new RegExp(`model\\.path: ${page.replace(/[.]/g, "\\.")} is not a GGUF file`));
    });

    it("downloads the chosen model from a Hugging Face endpoint with progress in the status", async () => {
        const source = join(modelsDir, fileFor("0.8B"));
        const size = (await stat(source)).size;
        const requests: string[] = [];
        const server: Server = createServer((req, res) => {
            requests.push(`${req.method} ${req.url}`);
            if (new URL(req.url ?? "/", "http://x").pathname !== "/unsloth/Qwen3.5-0.8B-GGUF/resolve/main/Qwen3.5-0.8B-Q4_K_M.gguf") {
                res.writeHead(404).end();
                return;
            }
            const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
            const start = range ? Number(range[1]) : 0;
            const end = range && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
            res.writeHead(range ? 206 : 200, {"content-length": end - start + 1, "accept-ranges": "bytes",
                ...(range ? {"content-range": `bytes ${start}-${end}/${size}`} : {})});
            if (req.method === "HEAD") res.end();
            else createReadStream(source, {start, end}).pipe(res);
        });
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        const port = (server.address() as {port: number}).port;
        const target = join(work.path, "download-models");
        const daemon = spawnDaemon({brokerUrl: broker.url, modelPath: "", deviceId: "choice-d", stateDir: join(work.path, "state-d"),
            args: ["--model-dir", target, "--model-variant", "0.8b", "--model-hf-endpoint", `http://127.0.0.1:${port}/`]});
        try {
            await client.waitFor("choice-d online", (m) => m.topic === "qwen-edge/choice-d/status" && m.json?.state === "online", 60_000);
            const loaded = await daemon.waitForLog("model loaded", (l) => l.message === "model loaded");
            assert.equal(loaded.modelPath, join(target, fileFor("0.8B")));
            assert.equal((await stat(join(target, fileFor("0.8B")))).size, size);
            const phases = client.received.filter((m) => m.topic === "qwen-edge/choice-d/status" && m.json?.state === "loading")
                .map((m) => (m.json?.progress as {phase?: string} | undefined)?.phase);
            assert.ok(phases.includes("planning"), `phases seen: ${phases.join(",")}`);
            assert.ok(phases.includes("loading"), `phases seen: ${phases.join(",")}`);
            assert.ok(requests.some((r) => r.startsWith("GET /unsloth/")), requests.join("; "));
        } finally {
            await daemon.kill();
            server.close();
        }
    });
});
