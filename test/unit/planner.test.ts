import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {
    MODEL_VARIANTS, catalogRequirement, modelUri,
    type CandidateRequirement, type ModelVariant, type Quantization
} from "../../src/models/catalog.js";
import {defaultReserveBytes, planModel, renderPlan, type ModelPlan, type PlanInput} from "../../src/models/planner.js";
import {formatBytes, parseSize} from "../../src/util/size.js";
import {probeDevice, type MemoryFacts} from "../../src/system/probe.js";
import {ConfigError} from "../../src/errors.js";
import {fallbackOrder} from "../../src/models/select.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/sysfs");
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SHAPE = {contextSize: 4096, batchSize: 128, sequences: 1};

function candidates(quants: readonly Quantization[] = ["Q4_K_M", "Q8_0"]): CandidateRequirement[] {
    return MODEL_VARIANTS.flatMap((v) => quants.map((q) => catalogRequirement(v, q, modelUri(v, q), SHAPE)));
}

function override(bytes: number, extra: Partial<PlanInput> = {}): ModelPlan {
    return planModel({memory: {kind: "override", availableBytes: bytes}, candidates: candidates(), ...extra});
}

function facts(overrides: Partial<Omit<MemoryFacts, "cgroup">> & {cgroup?: Partial<MemoryFacts["cgroup"]>} = {}): MemoryFacts {
    const {cgroup, ...rest} = overrides;
    return {
        totalBytes: 16 * GiB, availableBytes: 12 * GiB, freeBytes: 8 * GiB, swapTotalBytes: 0, swapFreeBytes: 0, constrainedBytes: null,
        ...rest,
        cgroup: {version: 2, limitBytes: null, usageBytes: null, inactiveFileBytes: null, headroomBytes: null, swapLimitBytes: null, path: "/", ...cgroup}
    };
}

const index = (v: ModelVariant | undefined): number => (v === undefined ? -1 : MODEL_VARIANTS.indexOf(v));

describe("planModel across memory sizes", () => {
    const table: Array<[string, ModelVariant | null]> = [
        // 1 GiB: 0.8B needs 961 MiB at the default context (weights, 248k-token vocabulary, context, runtime)
        ["256MiB", null], ["512MiB", null], ["768MiB", null], ["1GiB", null], ["1088MiB", "0.8b"], ["1536MiB", "0.8b"], ["2GiB", "2b"],
        ["3GiB", "2b"], ["4GiB", "4b"], ["5GiB", "4b"], ["8GiB", "9b"], ["16GiB", "9b"], ["32GiB", "9b"]
    ];
    for (const [size, expected] of table) {
        it(`--memory ${size} picks ${expected ?? "nothing"}`, () => {
            const plan = override(parseSize(size));
            assert.equal(plan.choice?.variant ?? null, expected, plan.reason);
            if (expected) assert.equal(plan.choice?.quant, "Q4_K_M", "default quantization list is Q4_K_M only");
            assert.equal(plan.budgetSource, "override");
            assert.equal(plan.budgetBytes, parseSize(size) - defaultReserveBytes(parseSize(size)));
        });
    }

    it("never picks a smaller model with more memory; the choice fits and the next larger does not", () => {
        for (const quants of [["Q4_K_M"], ["Q8_0", "Q4_K_M"], ["Q4_K_M", "Q8_0"]] as Quantization[][]) {
            let previous = -1;
            for (let bytes = 256 * MiB; bytes <= 32 * GiB; bytes += 64 * MiB) {
                const plan = override(bytes, {quantPreference: quants});
                const chosen = index(plan.choice?.variant);
                assert.ok(chosen >= previous, `${formatBytes(bytes)} with [${quants.join(",")}] chose ${plan.choice?.variant} after a larger one`);
                previous = chosen;
                if (plan.choice) {
                    assert.ok(plan.choice.requiredBytes <= plan.budgetBytes, "the chosen candidate fits");
                }
                const larger = plan.candidates.filter((c) => c.eligible && index(c.variant) > chosen);
                assert.ok(larger.every((c) => !c.fits), `${formatBytes(bytes)}: a larger eligible candidate fits but was not chosen`);
            }
        }
    });

    it("takes quantizations in preference order within the largest variant that fits", () => {
        const plan = override(3 * GiB, {quantPreference: ["Q8_0", "Q4_K_M"]});
        assert.deepEqual([plan.choice?.variant, plan.choice?.quant], ["2b", "Q8_0"], plan.reason);
        const q4 = plan.candidates.find((c) => c.variant === "2b" && c.quant === "Q4_K_M");
        assert.match(q4?.reason ?? "", /Q8_0 comes first/);
    });
});

describe("planModel budget", () => {
    it("lets a cgroup limit below MemAvailable bind, net of the cgroup's usage", () => {
        const plan = planModel({
            memory: {kind: "probed", facts: facts({cgroup: {limitBytes: 1.5 * GiB, usageBytes: 100 * MiB, headroomBytes: 1.5 * GiB - 100 * MiB}})},
            candidates: candidates()
        });
        assert.equal(plan.budgetSource, "cgroup");
        assert.equal(plan.budgetBytes, 1.5 * GiB - 100 * MiB - defaultReserveBytes(1.5 * GiB));
        assert.equal(plan.choice?.variant, "0.8b");
        assert.equal(plan.limits.find((l) => l.binding)?.source, "cgroup");
        assert.match(plan.reason, /cgroup v2 memory\.max/);
    });

    it("uses limit − usage when the probe gave no headroom, and finds nothing when the cgroup is nearly full", () => {
        const plan = planModel({
            memory: {kind: "probed", facts: facts({cgroup: {limitBytes: 2 * GiB, usageBytes: 1638 * MiB}})},
            candidates: candidates()
        });
        assert.equal(plan.budgetBytes, 2 * GiB - 1638 * MiB - defaultReserveBytes(2 * GiB));
        assert.equal(plan.choice, null);
        const smallest = candidates().find((c) => c.variant === "0.8b" && c.quant === "Q4_K_M")!;
        assert.match(plan.reason, /^Nothing fits: the smallest model, Qwen3\.5-0\.8B-Q4_K_M, needs /);
        assert.ok(plan.reason.includes(formatBytes(smallest.requiredBytes)), plan.reason);
        assert.deepEqual(plan.smallest, {variant: "0.8b", quant: "Q4_K_M", requiredBytes: smallest.requiredBytes});
    });

    it("does not count swap", () => {
        const without = planModel({memory: {kind: "probed", facts: facts({availableBytes: 3 * GiB})}, candidates: candidates()});
        const withSwap = planModel({
            memory: {kind: "probed", facts: facts({availableBytes: 3 * GiB, swapTotalBytes: 16 * GiB, swapFreeBytes: 16 * GiB})},
            candidates: candidates()
        });
        assert.equal(withSwap.budgetBytes, without.budgetBytes);
        assert.deepEqual(withSwap.choice, without.choice);
        assert.match(renderPlan(withSwap), /swap 16 GiB is not counted/);
    });

    it("bounds the budget by process.constrainedMemory() when no cgroup limit was read", () => {
        const plan = planModel({memory: {kind: "probed", facts: facts({constrainedBytes: 2 * GiB})}, candidates: candidates()});
        assert.equal(plan.budgetSource, "constrained-memory");
        assert.equal(plan.choice?.variant, "2b");
    });

    it("uses a configured reserve instead of the default", () => {
        const plan = override(2 * GiB, {reserveBytes: 700 * MiB});
        assert.equal(plan.budgetBytes, 2 * GiB - 700 * MiB);
        assert.equal(plan.reserveBytes, 700 * MiB);
        assert.equal(plan.choice?.variant, "0.8b");
    });

    it("scales the default reserve with the memory a limit governs", () => {
        assert.equal(defaultReserveBytes(256 * MiB), 64 * MiB);
        assert.equal(defaultReserveBytes(4 * GiB), Math.round(4 * GiB * 0.05));
        assert.equal(defaultReserveBytes(64 * GiB), 512 * MiB);
    });
});

describe("planModel with a pinned variant", () => {
    it("uses the pinned variant when it fits, though a larger one would", () => {
        const plan = override(16 * GiB, {variant: "2b"});
        assert.equal(plan.choice?.variant, "2b");
        assert.match(plan.reason, /pinned to 2b/);
        assert.ok(plan.candidates.filter((c) => c.variant !== "2b").every((c) => !c.eligible && /pinned to 2b/.test(c.reason)));
    });

    it("reports a pinned variant that does not fit instead of picking another", () => {
        const plan = override(4 * GiB, {variant: "9b"});
        assert.equal(plan.choice, null);
        const nine = plan.candidates.find((c) => c.variant === "9b" && c.quant === "Q4_K_M")!;
        assert.match(plan.reason, /^model\.variant is pinned to 9b, but Qwen3\.5-9B-Q4_K_M, needs /);
        assert.ok(plan.reason.includes(formatBytes(nine.requiredBytes)) && plan.reason.includes(formatBytes(plan.budgetBytes)), plan.reason);
    });
});

describe("planModel on recorded devices (catalog numbers, 4096-token context)", () => {
    // container-1g: 856 MiB of budget under memory.max 1 GiB, and the 0.8B needs 961 MiB at a 4096-token context
    const cases: Array<[string, ModelVariant | null, string]> = [
        ["pi4-4gb", "2b", "mem-available"], ["container-1g", null, "cgroup"], ["cgroup-v1-2g", "2b", "cgroup"]
    ];
    for (const [tree, variant, source] of cases) {
        it(`${tree} -> ${variant ?? "nothing"}, bound by ${source}`, async () => {
            const device = await probeDevice({root: join(fixtures, tree)});
            const plan = planModel({memory: {kind: "probed", facts: device.memory}, candidates: candidates()});
            assert.equal(plan.choice?.variant ?? null, variant, plan.reason);
            assert.equal(plan.budgetSource, source);
        });
    }
});

describe("plan output", () => {
    it("has the JSON shape `qwen-edge plan --json` promises", () => {
        const plan = JSON.parse(JSON.stringify(override(4 * GiB))) as Record<string, unknown>;
        for (const key of ["budgetBytes", "budgetSource", "memory", "candidates", "choice", "reason"]) assert.ok(key in plan, key);
        const first = (plan.candidates as Array<Record<string, unknown>>)[0]!;
        for (const key of ["variant", "quant", "requiredBytes", "fits", "source", "reason"]) assert.ok(key in first, key);
        assert.deepEqual(Object.keys(plan.choice as object).sort(), ["quant", "requiredBytes", "source", "uri", "variant"]);
        assert.equal((plan.choice as {uri: string}).uri, "hf:unsloth/Qwen3.5-4B-GGUF/Qwen3.5-4B-Q4_K_M.gguf");
    });

    it("renders a table with every candidate, the choice and the reason", () => {
        const plan = override(4 * GiB, {quantPreference: ["Q4_K_M", "Q8_0"]});
        const text = renderPlan(plan);
        for (const v of ["0.8B", "2B", "4B", "9B"]) for (const q of ["Q4_K_M", "Q8_0"]) assert.ok(text.includes(`Qwen3.5-${v}-${q}`), `${v} ${q}`);
        assert.match(text, /^ {2}> Qwen3\.5-4B-Q4_K_M/m);
        assert.ok(text.includes("Choice: Qwen3.5-4B-Q4_K_M (hf:unsloth/Qwen3.5-4B-GGUF/Qwen3.5-4B-Q4_K_M.gguf)"));
        assert.ok(text.endsWith(plan.reason));
        assert.match(renderPlan(override(256 * MiB)), /Choice: none\nNothing fits/);
    });
});

describe("planModel with what is in model.dir", () => {
    const q4 = (v: string): string => `Qwen3.5-${v}-Q4_K_M`;

    it("downloads off: the largest present model that fits is the choice, with the larger one named in the reason", () => {
        const plan = override(16 * GiB, {quantPreference: ["Q4_K_M"], provisioning: {download: false, present: [q4("0.8B"), q4("2B")]}});
        assert.equal(plan.choice?.variant, "2b", plan.reason);
        assert.equal(plan.downloads, false);
        assert.match(plan.reason, /^Qwen3\.5-2B-Q4_K_M is the largest present model that fits: it needs .* Qwen3\.5-9B-Q4_K_M would fit but downloads are off \(model\.download: false\)\.$/);
        const nine = plan.candidates.find((c) => c.variant === "9b" && c.quant === "Q4_K_M")!;
        assert.equal(nine.present, false);
        assert.match(nine.reason, /fits \(needs .*\), but its file is not in model\.dir and downloads are off/);
        assert.deepEqual(fallbackOrder(plan).map((c) => c.variant), ["2b", "0.8b"], "only present models to fall back to");
        assert.match(renderPlan(plan), /^ {2}> Qwen3\.5-2B-Q4_K_M .* yes +yes +catalog$/m);
    });

    it("downloads off and nothing there: the largest that fits, saying its file is missing; no fallback to missing files", () => {
        const plan = override(16 * GiB, {quantPreference: ["Q4_K_M"], provisioning: {download: false, present: []}});
        assert.equal(plan.choice?.variant, "9b");
        assert.match(plan.reason, /Its file is not in model\.dir and downloads are off \(model\.download: false\)\.$/);
        assert.deepEqual(fallbackOrder(plan).map((c) => c.variant), ["9b"]);
    });

    it("downloads off: a present model that does not fit is not chosen", () => {
        const plan = override(2 * GiB, {quantPreference: ["Q4_K_M"], provisioning: {download: false, present: [q4("9B"), q4("0.8B")]}});
        assert.equal(plan.choice?.variant, "0.8b", plan.reason);
        assert.match(plan.reason, /Qwen3\.5-2B-Q4_K_M would fit but downloads are off/);
    });

    it("downloads on: what is on disk does not change the choice (the rest can be fetched)", () => {
        const plan = override(16 * GiB, {quantPreference: ["Q4_K_M"], provisioning: {download: true, present: [q4("2B")]}});
        assert.equal(plan.choice?.variant, "9b");
        assert.match(plan.reason, /^Qwen3\.5-9B-Q4_K_M is the largest model that fits/);
        assert.equal(fallbackOrder(plan).length, 4, "any smaller model can still be downloaded");
    });
});

describe("parseSize and formatBytes", () => {
    const good: Array<[string, number]> = [
        ["123456", 123456], ["4GiB", 4 * GiB], ["1536MiB", 1536 * MiB], ["1.5GB", 1.5e9], ["512 mb", 512e6],
        ["4G", 4 * GiB], ["2k", 2048], ["0.5TiB", 512 * GiB], ["10B", 10], [" 8 GiB ", 8 * GiB]
    ];
    for (const [text, bytes] of good) it(`parses "${text}"`, () => assert.equal(parseSize(text), bytes));

    for (const bad of ["", "GiB", "-1GiB", "4 gigs", "1e9", "4GiBs", "0x10", "1,5GB"]) {
        it(`rejects "${bad}" with a ConfigError that quotes it`, () => {
            assert.throws(() => parseSize(bad), (err: unknown) => err instanceof ConfigError && err.message.includes(`"${bad}"`));
        });
    }

    it("formats bytes in binary units", () => {
        assert.equal(formatBytes(512), "512 B");
        assert.equal(formatBytes(1536 * MiB), "1.5 GiB");
        assert.equal(formatBytes(64 * MiB), "64 MiB");
        assert.equal(formatBytes(102_396 * 1024), "100 MiB");
        assert.equal(formatBytes(3_222_656 * 1024), "3.07 GiB");
        assert.equal(formatBytes(-2 * MiB), "-2 MiB");
    });
});
