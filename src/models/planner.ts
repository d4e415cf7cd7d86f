/**
 * Picks the model: the memory budget (the tightest limit that applies, minus a reserve) against each
 * candidate's requirement (weights + context + runtime overhead). Pure: no I/O; the facts come in.
 * The `MemoryFacts` import is type-only and erased at run time.
 */
import type {CgroupMemoryFacts, MemoryFacts} from "../system/probe.js";
import {formatBytes} from "../util/size.js";
import {
    DEFAULT_QUANT_PREFERENCE, MODEL_VARIANTS, modelName,
    type CandidateRequirement, type ModelVariant, type Quantization, type RequirementSource
} from "./catalog.js";

export type {CandidateRequirement, RequirementSource};
export type VariantPin = "auto" | ModelVariant;
export type BudgetSource = "mem-available" | "cgroup" | "constrained-memory" | "override";

export type MemoryInput =
    | {kind: "probed"; facts: MemoryFacts}
    /** `qwen-edge plan --memory SIZE`: a device with SIZE available before qwen-edge starts. */
    | {kind: "override"; availableBytes: number};

export interface PlanInput {
    memory: MemoryInput;
    /** Bytes kept free for the OS and everything else. Default: `defaultReserveBytes` of each limit's size. */
    reserveBytes?: number;
    candidates: readonly CandidateRequirement[];
    /** `model.variant`; default "auto". */
    variant?: VariantPin;
    /** `model.quantizations`, most preferred first; default DEFAULT_QUANT_PREFERENCE. */
    quantPreference?: readonly Quantization[];
    /**
     * What is in model.dir. With downloads off only a file that is there can be served, so the choice
     * is the largest present model that fits (a model placed by hand is a choice, not a fault);
     * without this the planner does not look at the disk.
     */
    provisioning?: {download: boolean; present: readonly string[]};
}

export interface MemoryLimit {
    source: BudgetSource;
    /** What the limit is, e.g. "MemAvailable" or "cgroup v2 memory.max". */
    label: string;
    /** The memory the limit governs (MemTotal, the cgroup limit, ...): the basis of the default reserve. */
    sizeBytes: number;
    /** What is left under this limit now. */
    headroomBytes: number;
    reserveBytes: number;
    /** max(0, headroom − reserve) */
    budgetBytes: number;
    binding: boolean;
    detail: string;
}

export interface PlannedCandidate extends CandidateRequirement {
    fits: boolean;
    /** False when the variant pin or the quantization list rules it out. */
    eligible: boolean;
    /** Its file is in model.dir; null when the planner was not told (plan --memory, tests). */
    present: boolean | null;
    reason: string;
}

export interface ModelChoice {
    variant: ModelVariant;
    quant: Quantization;
    uri: string;
    requiredBytes: number;
    source: RequirementSource;
}

export interface PlanMemory {
    override: boolean;
    totalBytes: number | null;
    availableBytes: number;
    swapTotalBytes: number | null;
    swapFreeBytes: number | null;
    cgroup: CgroupMemoryFacts | null;
    constrainedBytes: number | null;
}

export interface ModelPlan {
    budgetBytes: number;
    budgetSource: BudgetSource;
    /** The reserve taken from the binding limit. */
    reserveBytes: number;
    memory: PlanMemory;
    limits: MemoryLimit[];
    /** model.download, when the planner was told what is on disk; else null */
    downloads: boolean | null;
    candidates: PlannedCandidate[];
    choice: ModelChoice | null;
    reason: string;
    /** The eligible candidate needing least memory; named when nothing fits. */
    smallest: {variant: ModelVariant; quant: Quantization; requiredBytes: number} | null;
}

const MiB = 1024 * 1024;

/**
 * Default reserve: 5 % of the memory a limit governs, at least 64 MiB and at most 512 MiB. On a host this
 * keeps the page cache that running programs live on (a Pi 4 with 4 GB keeps ~190 MiB); inside a cgroup
 * it is slack for the daemon's own growth. Weights are counted in full even though they are mmap'ed: a
 * model whose pages get evicted re-reads them from disk on every token.
 */
export function defaultReserveBytes(sizeBytes: number): number {
    return Math.min(512 * MiB, Math.max(64 * MiB, Math.round(sizeBytes * 0.05)));
}

export function planModel(input: PlanInput): ModelPlan {
    const limits = memoryLimits(input.memory, input.reserveBytes);
    const binding = limits.reduce((a, b) => (b.budgetBytes < a.budgetBytes ? b : a));
    binding.binding = true;
    const budget = binding.budgetBytes;
    const pin = input.variant ?? "auto";
    const preference = input.quantPreference ?? DEFAULT_QUANT_PREFERENCE;

    const eligible = (c: CandidateRequirement): boolean => (pin === "auto" || c.variant === pin) && preference.includes(c.quant);
    const ordered = [...input.candidates].sort((a, b) =>
        MODEL_VARIANTS.indexOf(a.variant) - MODEL_VARIANTS.indexOf(b.variant) || rank(preference, a.quant) - rank(preference, b.quant));

    const present = (c: CandidateRequirement): boolean | null =>
        input.provisioning ? input.provisioning.present.includes(modelName(c.variant, c.quant)) : null;
    // Largest variant first; within it the first quantization in preference order that fits.
    const largest = (usable: (c: CandidateRequirement) => boolean): CandidateRequirement | null => {
        for (const variant of [...MODEL_VARIANTS].reverse()) {
            const found = preference.map((q) => ordered.find((c) => c.variant === variant && c.quant === q && eligible(c)))
                .find((c) => c !== undefined && c.requiredBytes <= budget && usable(c));
            if (found) return found;
        }
        return null;
    };
    const largestFitting = largest(() => true);
    // Downloads off: the largest file that is there. Nothing there: the largest that fits, whose file
    // provisioning then names (place it, or allow downloads).
    const offline = input.provisioning?.download === false;
    const chosen = (offline ? largest((c) => present(c) === true) : null) ?? largestFitting;
    const passedOver = chosen !== largestFitting ? largestFitting : null;
    const smallestCandidate = ordered.filter(eligible).reduce<CandidateRequirement | null>(
        (a, c) => (a === null || c.requiredBytes < a.requiredBytes ? c : a), null);

    const candidates = ordered.map((c): PlannedCandidate => {
        const fits = c.requiredBytes <= budget;
        const here = present(c);
        const notHere = offline && here === false && fits && eligible(c) && chosen !== c;
        return {...c, fits, eligible: eligible(c), present: here,
            reason: notHere ? `fits (needs ${formatBytes(c.requiredBytes)}), but its file is not in model.dir and downloads are off`
                : candidateReason(c, fits, eligible(c), chosen, pin, preference, budget)};
    });
    const budgetText = `${formatBytes(budget)} budget (${describeBudget(binding)})`;
    return {
        budgetBytes: budget,
        budgetSource: binding.source,
        reserveBytes: binding.reserveBytes,
        memory: planMemory(input.memory),
        limits,
        downloads: input.provisioning?.download ?? null,
        candidates,
        choice: chosen && {variant: chosen.variant, quant: chosen.quant, uri: chosen.uri, requiredBytes: chosen.requiredBytes, source: chosen.source},
        reason: planReason(chosen, smallestCandidate, ordered.filter(eligible), pin, budgetText, {passedOver,
            missing: offline && chosen !== null && present(chosen) === false}),
        smallest: smallestCandidate && {variant: smallestCandidate.variant, quant: smallestCandidate.quant, requiredBytes: smallestCandidate.requiredBytes}
    };
}

function rank(preference: readonly Quantization[], quant: Quantization): number {
    const i = preference.indexOf(quant);
    return i === -1 ? preference.length : i;
}

function memoryLimits(memory: MemoryInput, reserve: number | undefined): MemoryLimit[] {
    const limit = (source: BudgetSource, label: string, sizeBytes: number, headroomBytes: number, detail: string): MemoryLimit => {
        const reserveBytes = reserve ?? defaultReserveBytes(sizeBytes);
        return {source, label, sizeBytes, headroomBytes, reserveBytes, budgetBytes: Math.max(0, headroomBytes - reserveBytes), binding: false, detail};
    };
    if (memory.kind === "override") {
        return [limit("override", "--memory", memory.availableBytes, memory.availableBytes, `${formatBytes(memory.availableBytes)} given`)];
    }
    const f = memory.facts;
    // MemAvailable already leaves swap out: a model paged to swap is too slow to serve.
    const limits = [limit("mem-available", "MemAvailable", f.totalBytes || f.availableBytes, f.availableBytes,
        `${formatBytes(f.availableBytes)} of ${formatBytes(f.totalBytes)}`)];
    const cg = f.cgroup;
    if (cg.limitBytes !== null) {
        const used = cg.headroomBytes !== null ? cg.limitBytes - cg.headroomBytes : cg.usageBytes ?? 0;
        const headroom = cg.headroomBytes ?? Math.max(0, cg.limitBytes - used);
        const file = cg.version === 1 ? "memory.limit_in_bytes" : "memory.max";
        limits.push(limit("cgroup", `cgroup v${cg.version ?? "?"} ${file}`, cg.limitBytes, headroom,
            `${formatBytes(cg.limitBytes)} limit − ${formatBytes(used)} in use`));
    }
    // Node's view of the same limit; listed only when it says something the cgroup files did not.
    if (f.constrainedBytes !== null && (cg.limitBytes === null || f.constrainedBytes < cg.limitBytes)) {
        limits.push(limit("constrained-memory", "process.constrainedMemory()", f.constrainedBytes, f.constrainedBytes,
            `${formatBytes(f.constrainedBytes)} limit, usage unknown`));
    }
    return limits;
}

function planMemory(memory: MemoryInput): PlanMemory {
    if (memory.kind === "override") {
        return {override: true, totalBytes: null, availableBytes: memory.availableBytes, swapTotalBytes: null, swapFreeBytes: null, cgroup: null, constrainedBytes: null};
    }
    const f = memory.facts;
    return {override: false, totalBytes: f.totalBytes, availableBytes: f.availableBytes, swapTotalBytes: f.swapTotalBytes,
        swapFreeBytes: f.swapFreeBytes, cgroup: {...f.cgroup}, constrainedBytes: f.constrainedBytes};
}

function describeBudget(l: MemoryLimit): string {
    return `${l.label}: ${formatBytes(l.headroomBytes)} free − ${formatBytes(l.reserveBytes)} reserve`;
}

function candidateReason(c: CandidateRequirement, fits: boolean, eligible: boolean, chosen: CandidateRequirement | null,
    pin: VariantPin, preference: readonly Quantization[], budget: number): string {
    const need = `needs ${formatBytes(c.requiredBytes)}`;
    const from = c.source === "catalog" ? ` (catalog estimate${c.note ? `: ${c.note}` : ""})` : "";
    if (!eligible) {
        const why = pin !== "auto" && c.variant !== pin ? `model.variant is pinned to ${pin}` : `${c.quant} is not in the quantization list`;
        return `not considered: ${why}; ${need}${from}`;
    }
    if (chosen === c) return `chosen: ${need} of ${formatBytes(budget)}${from}`;
    if (!fits) return `does not fit: ${need}, ${formatBytes(c.requiredBytes - budget)} over the budget${from}`;
    if (chosen && chosen.variant === c.variant) return `fits (${need}), but ${chosen.quant} comes first in the quantization list${from}`;
    return `fits (${need}), but a larger variant fits too${from}`;
}

function planReason(chosen: CandidateRequirement | null, smallest: CandidateRequirement | null,
    eligible: CandidateRequirement[], pin: VariantPin, budgetText: string,
    disk: {passedOver: CandidateRequirement | null; missing: boolean}): string {
    if (eligible.length === 0) {
        return pin === "auto" ? "No candidates: the quantization list names none the catalog knows." : `No candidates for the pinned variant ${pin}.`;
    }
    if (chosen) {
        const name = modelName(chosen.variant, chosen.quant);
        const missing = disk.missing ? " Its file is not in model.dir and downloads are off (model.download: false)." : "";
        if (disk.passedOver) {
            return `${name} is the largest present model that fits: it needs ${formatBytes(chosen.requiredBytes)} of the ${budgetText}; `
                + `${modelName(disk.passedOver.variant, disk.passedOver.quant)} would fit but downloads are off (model.download: false).`;
        }
        if (pin !== "auto") return `model.variant is pinned to ${pin}: ${name} needs ${formatBytes(chosen.requiredBytes)} of the ${budgetText}.${missing}`;
        const larger = eligible.filter((c) => MODEL_VARIANTS.indexOf(c.variant) > MODEL_VARIANTS.indexOf(chosen.variant))
            .reduce<CandidateRequirement | null>((a, c) => (a === null || c.requiredBytes < a.requiredBytes ? c : a), null);
        const next = larger ? ` The next larger, ${modelName(larger.variant, larger.quant)}, needs ${formatBytes(larger.requiredBytes)}.` : "";
        return `${name} is the largest model that fits: it needs ${formatBytes(chosen.requiredBytes)} of the ${budgetText}.${next}${missing}`;
    }
    const s = smallest ?? eligible[0]!;
    const what = `${modelName(s.variant, s.quant)}, needs ${formatBytes(s.requiredBytes)}`;
    if (pin !== "auto") return `model.variant is pinned to ${pin}, but ${what} and the device has a ${budgetText}. Set model.variant to auto or free memory.`;
    return `Nothing fits: the smallest model, ${what}, but the device has a ${budgetText}.`;
}

/** The `qwen-edge plan` table. */
export function renderPlan(plan: ModelPlan): string {
    const lines: string[] = [];
    lines.push(`Memory budget: ${formatBytes(plan.budgetBytes)}`);
    for (const l of plan.limits) {
        lines.push(`  ${l.binding ? "*" : " "} ${l.label.padEnd(33)} ${l.detail}; reserve ${formatBytes(l.reserveBytes)} -> ${formatBytes(l.budgetBytes)}`);
    }
    if (!plan.memory.override && plan.memory.swapTotalBytes) {
        lines.push(`    swap ${formatBytes(plan.memory.swapTotalBytes)} is not counted`);
    }
    lines.push("", "Candidates:");
    const header = ["model", "needs", "weights", "vocabulary", "context", "runtime", "fits", "in model.dir", "numbers from"];
    const rows = plan.candidates.map((c) => [
        modelName(c.variant, c.quant), formatBytes(c.requiredBytes), formatBytes(c.weightsBytes), formatBytes(c.tokenizerBytes),
        formatBytes(c.contextBytes), formatBytes(c.overheadBytes), !c.eligible ? "-" : c.fits ? "yes" : "no",
        c.present === null ? "?" : c.present ? "yes" : "no", c.source
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const row = (cells: string[], mark: string): string => `  ${mark} ` + cells.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
    lines.push(row(header, " "));
    plan.candidates.forEach((c, i) => {
        const chosen = plan.choice?.variant === c.variant && plan.choice.quant === c.quant;
        lines.push(row(rows[i]!, chosen ? ">" : " "));
    });
    const checkpoints = plan.candidates.find((c) => plan.choice?.variant === c.variant && plan.choice.quant === c.quant)?.checkpointBytes
        ?? plan.candidates[0]?.checkpointBytes ?? 0;
    if (checkpoints > 0) lines.push(`    context includes up to ${formatBytes(checkpoints)} of prompt-reuse checkpoints (inference.promptCheckpoints)`);
    lines.push("");
    lines.push(plan.choice ? `Choice: ${modelName(plan.choice.variant, plan.choice.quant)} (${plan.choice.uri})` : "Choice: none");
    lines.push(plan.reason);
    return lines.join("\n");
}
