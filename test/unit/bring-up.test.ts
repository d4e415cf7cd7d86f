/**
 * Bringing the model up, with a fake engine (it records what it is asked to load and fails where told)
 * and everything else real: this machine's probe, tiny qwen35 GGUFs under the catalog's file names in
 * model.dir, node-llama-cpp's estimates, the planner and provisioning with downloads off.
 */
import assert from "node:assert/strict";
import {mkdir, mkdtemp, rm, truncate, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {basename, join} from "node:path";
import {after, before, describe, it} from "node:test";
import {getLlama, LlamaLogLevel, type Llama} from "node-llama-cpp";
import {ModelUnavailableError, NoModelFitsError} from "../../src/errors.js";
import {bringUpModel, type BringUpConfig, type BringUpDeps} from "../../src/models/bring-up.js";
import {writeTinyQwen35} from "../../src/testing/tiny-qwen35.js";
import {memoryLogger} from "../support/fake-link.js";
import {modelFile} from "../support/models.js";

const SMALL = "Qwen3.5-0.8B-Q4_K_M";
const LARGE = "Qwen3.5-2B-Q4_K_M";

/** Records each load; `fail` says which paths fail and how. */
class FakeEngine {
    public readonly loads: Array<{file: string; ramCapBytes: number | null | undefined}> = [];
    public constructor(public readonly runtime: Llama | null, private readonly fail: (file: string) => Error | null = () => null) {}
    public async load(path: string, ramCapBytes?: number | null): Promise<void> {
        this.loads.push({file: basename(path), ramCapBytes});
        const failure = this.fail(basename(path));
        if (failure) throw failure;
    }
}

let llama: Llama;
let work: string;

before(async () => {
    work = await mkdtemp(join(tmpdir(), "qe-bring-up-"));
    // The engine's runtime is what planning estimates with: a real one, as the daemon's engine has.
    llama = await getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error});
});
after(async () => {
    await llama?.dispose();
    await rm(work, {recursive: true, force: true});
});

let dirs = 0;
/** A model.dir holding tiny stand-ins for 0.8B and 2B (Q4_K_M); the 2B one is larger, as the real one is. */
async function modelsDir(): Promise<string> {
    const dir = join(work, `models-${++dirs}`);
    await mkdir(dir);
    await writeTinyQwen35(join(dir, `${SMALL}.gguf`), {kind: "scripted", seed: 1});
    await writeTinyQwen35(join(dir, `${LARGE}.gguf`), {kind: "scripted", seed: 2, layers: 8});
    return dir;
}

function config(model: Partial<BringUpConfig["model"]>): BringUpConfig {
    return {
        model: {path: "", dir: "", variant: "auto", quants: ["Q4_K_M"], repository: "unsloth/Qwen3.5-{size}-GGUF", download: false,
            reserveBytes: 0, hfToken: "", hfEndpoint: "", mmap: false, ...model},
        inference: {contextSize: 1024, batchSize: 128, parallel: 1, promptCheckpoints: 0}
    };
}

function bringUp(cfg: BringUpConfig, engine: FakeEngine): {run: Promise<Awaited<ReturnType<typeof bringUpModel>>>;
    phases: Array<{phase: string; progress: Record<string, unknown>}>; lines: Array<Record<string, unknown>>} {
    const phases: Array<{phase: string; progress: Record<string, unknown>}> = [];
    const {log, lines} = memoryLogger();
    const deps: BringUpDeps = {config: cfg, log, engine, onPhase: (phase, progress) => phases.push({phase, progress})};
    return {run: bringUpModel(deps), phases, lines};
}

void describe("bringUpModel", () => {
    void it("model.path: checks the file and loads it as given, with no plan and no memory cap", async () => {
        const path = await modelFile("scripted");
        const engine = new FakeEngine(llama);
        const b = bringUp(config({path}), engine);
        assert.deepEqual(await b.run, {name: basename(path, ".gguf"), path, plan: null, fallback: null});
        assert.deepEqual(engine.loads, [{file: basename(path), ramCapBytes: undefined}]);
        assert.deepEqual(b.phases, [{phase: "loading", progress: {phase: "loading", model: basename(path, ".gguf")}}]);
    });

    void it("model.path that is not a GGUF: refused before the engine sees it", async () => {
        const path = join(work, "page.gguf");
        await writeFile(path, "<html>404</html>\n");
        const engine = new FakeEngine(llama);
        await assert.rejects(bringUp(config({path}), engine).run, ModelUnavailableError);
        assert.deepEqual(engine.loads, []);
    });

    void it("plans, provisions and loads the largest model that fits, capped at the plan's budget", async () => {
        const dir = await modelsDir();
        const engine = new FakeEngine(llama);
        const b = bringUp(config({dir}), engine);
        const loaded = await b.run;
        assert.equal(loaded.name, LARGE);
        assert.equal(loaded.path, join(dir, `${LARGE}.gguf`));
        assert.equal(loaded.fallback, null);
        assert.equal(loaded.plan?.choice?.variant, "2b", loaded.plan?.reason);
        assert.deepEqual(engine.loads, [{file: `${LARGE}.gguf`, ramCapBytes: loaded.plan?.budgetBytes}]);
        // planning, then provisioning of the choice (checking the file), then loading it
        const order = b.phases.map((p) => p.phase).filter((p, i, all) => p !== all[i - 1]);
        assert.deepEqual(order, ["planning", "provisioning", "loading"]);
        assert.ok(b.phases.filter((p) => p.phase === "provisioning").every((p) => p.progress.model === LARGE));
        assert.deepEqual(b.phases.at(-1), {phase: "loading", progress: {phase: "loading", model: LARGE}});
    });

    void it("falls back to the next smaller candidate when loading fails, and says why", async () => {
        const dir = await modelsDir();
        const engine = new FakeEngine(llama, (file) => file === `${LARGE}.gguf` ? new Error("failed to create the context: not enough memory") : null);
        const b = bringUp(config({dir}), engine);
        const loaded = await b.run;
        assert.equal(loaded.name, SMALL);
        assert.equal(loaded.fallback, `running ${SMALL} instead of ${LARGE}: failed to create the context: not enough memory`);
        assert.deepEqual(engine.loads.map((l) => l.file), [`${LARGE}.gguf`, `${SMALL}.gguf`]);
        assert.ok(b.lines.some((l) => l.message === "model candidate failed" && l.model === LARGE), "the failure is logged");
        assert.ok(b.lines.some((l) => l.message === "model fallback" && l.model === SMALL), "the fallback is logged");
    });

    void it("falls back when provisioning fails (a truncated file), without loading it", async () => {
        const dir = await modelsDir();
        await truncate(join(dir, `${LARGE}.gguf`), 4096);
        const engine = new FakeEngine(llama);
        const loaded = await bringUp(config({dir}), engine).run;
        assert.equal(loaded.name, SMALL);
        assert.match(loaded.fallback ?? "", new RegExp(`^running ${SMALL} instead of ${LARGE}: `));
        assert.deepEqual(engine.loads.map((l) => l.file), [`${SMALL}.gguf`]);
    });

    void it("every candidate failing: model_unavailable naming how many failed and the first reason", async () => {
        const dir = await modelsDir();
        const engine = new FakeEngine(llama, (file) => new Error(`no memory for ${file}`));
        const err = await bringUp(config({dir}), engine).run.then(() => assert.fail("resolved"), (e: unknown) => e);
        assert.ok(err instanceof ModelUnavailableError);
        assert.equal(err.message, `2 candidates failed; the first: no memory for ${LARGE}.gguf`);
        assert.deepEqual(engine.loads.map((l) => l.file), [`${LARGE}.gguf`, `${SMALL}.gguf`]);
    });

    void it("a single candidate failing: model_unavailable with its reason alone", async () => {
        const dir = await modelsDir();
        const engine = new FakeEngine(llama, (file) => new Error(`no memory for ${file}`));
        const err = await bringUp(config({dir, variant: "0.8b"}), engine).run.then(() => assert.fail("resolved"), (e: unknown) => e);
        assert.ok(err instanceof ModelUnavailableError);
        assert.equal(err.message, `no memory for ${SMALL}.gguf`);
    });

    void it("nothing fits: no_model_fits with the plan's reason, and nothing is loaded", async () => {
        const dir = await modelsDir();
        const engine = new FakeEngine(llama);
        const b = bringUp(config({dir, reserveBytes: 2 ** 50}), engine);
        await assert.rejects(b.run, (err: unknown) => err instanceof NoModelFitsError && /^Nothing fits: the smallest model/.test(err.message));
        assert.deepEqual(engine.loads, []);
        assert.deepEqual(b.phases.map((p) => p.phase), ["planning"]);
    });
});
