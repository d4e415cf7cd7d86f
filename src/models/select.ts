/**
 * Model selection end to end, shared by `qwen-edge plan`, `qwen-edge pull` and the daemon:
 * probe the device -> estimate every candidate (GGUF header: local file, else the remote header by
 * HTTP range, else the catalog) -> plan (pure) -> provision the choice (local file or download).
 */
import {stat} from "node:fs/promises";
import {join} from "node:path";
import type {Llama} from "node-llama-cpp";
import type {InferenceConfig, ModelConfig} from "../config-schema.js";
import type {Logger} from "../log.js";
import {probeDevice, type DeviceFacts} from "../system/probe.js";
import {MODEL_VARIANTS, isModelVariant, modelFileName, modelName, modelUri} from "./catalog.js";
import {catalogTargets, estimateCandidates} from "./estimate.js";
import {planModel, type ModelPlan, type PlannedCandidate, type VariantPin} from "./planner.js";
import {provisionModel, type ProvisionedModel, type ProvisionProgress} from "./provision.js";
import {hfEndpoint, parseHfUri, resolveDownloadUrl} from "./provision-remote.js";

export interface PlanOutcome {
    plan: ModelPlan;
    facts: DeviceFacts;
}

/** What planning reads from the configuration. */
export interface PlanConfig {
    model: Pick<ModelConfig, "dir" | "variant" | "quants" | "repository" | "download" | "reserveBytes" | "hfEndpoint" | "mmap">;
    inference: Pick<InferenceConfig, "contextSize" | "batchSize" | "parallel" | "promptCheckpoints">;
}

/** What provisioning a candidate reads from the configuration. */
export interface ProvisionConfig {
    model: Pick<ModelConfig, "dir" | "repository" | "download" | "hfToken" | "hfEndpoint">;
}

export interface PlanOptions {
    /** plan for a device with this much available memory instead of this one */
    memoryBytes?: number;
    /** overrides model.variant (e.g. `pull --variant 4b`) */
    variant?: VariantPin;
    llama?: Llama;
    signal?: AbortSignal;
}

/** Probes, estimates and plans; logs nothing itself (callers decide how to show the plan). */
export async function planForDevice(config: PlanConfig, options: PlanOptions = {}): Promise<PlanOutcome> {
    const facts = await probeDevice();
    const variant = options.variant ?? config.model.variant;
    const quants = config.model.quants;
    const endpoint = hfEndpoint(config.model.hfEndpoint !== "" ? config.model.hfEndpoint : undefined);
    const variants = variant === "auto" ? MODEL_VARIANTS : MODEL_VARIANTS.filter((v) => v === variant);
    const targets = catalogTargets(quants, {repository: config.model.repository}, variants).map((t) => ({
        ...t,
        path: join(config.model.dir, modelFileName(t.variant, t.quant, {repository: config.model.repository})),
        // Remote headers are read from the same endpoint downloads use (a mirror, or a test server).
        uri: t.uri !== undefined && parseHfUri(t.uri) ? resolveDownloadUrl(t.uri, endpoint) : t.uri
    }));
    const candidates = await estimateCandidates(targets, {
        contextSize: config.inference.contextSize, batchSize: config.inference.batchSize, sequences: config.inference.parallel,
        checkpoints: config.inference.promptCheckpoints,
        remote: config.model.download, flashAttention: false, mmap: config.model.mmap,
        cpu: {arch: facts.board.arch, features: facts.board.simd},
        ...(options.llama ? {llama: options.llama} : {}), ...(options.signal ? {signal: options.signal} : {})
    });
    const present: string[] = [];
    for (const t of targets) if (await isFile(t.path)) present.push(modelName(t.variant, t.quant));
    const plan = planModel({
        memory: options.memoryBytes !== undefined ? {kind: "override", availableBytes: options.memoryBytes} : {kind: "probed", facts: facts.memory},
        ...(config.model.reserveBytes > 0 ? {reserveBytes: config.model.reserveBytes} : {}),
        candidates, variant, quantPreference: quants, provisioning: {download: config.model.download, present}
    });
    return {plan, facts};
}

/**
 * The candidates to try, best first: the choice, then every smaller one that fits (OOM fallback);
 * with downloads off only the smaller ones whose file is there.
 */
export function fallbackOrder(plan: ModelPlan): PlannedCandidate[] {
    if (!plan.choice) return [];
    const choice = plan.choice;
    const first = plan.candidates.find((c) => c.variant === choice.variant && c.quant === choice.quant);
    const rest = plan.candidates
        .filter((c) => c !== first && c.fits && c.eligible && c.requiredBytes < (first?.requiredBytes ?? Infinity))
        .filter((c) => plan.downloads !== false || c.present !== false)
        .sort((a, b) => b.requiredBytes - a.requiredBytes);
    return first ? [first, ...rest] : rest;
}

export interface ProvisionChoiceOptions {
    log: Logger;
    onProgress?: (p: ProvisionProgress) => void;
    signal?: AbortSignal;
}

/** Makes the candidate's file available in model.dir (as is, or downloaded and verified). */
export async function provisionCandidate(config: ProvisionConfig, candidate: Pick<PlannedCandidate, "variant" | "quant">,
    options: ProvisionChoiceOptions): Promise<ProvisionedModel & {name: string}> {
    const location = {repository: config.model.repository};
    const fileName = modelFileName(candidate.variant, candidate.quant, location);
    const uri = modelUri(candidate.variant, candidate.quant, location);
    const hfToken = config.model.hfToken !== "" ? config.model.hfToken : process.env.HF_TOKEN;
    const provisioned = await provisionModel({variant: candidate.variant, quant: candidate.quant, uri, fileName}, {
        dir: config.model.dir, allowDownload: config.model.download, log: options.log,
        ...(config.model.hfEndpoint !== "" ? {hfEndpoint: config.model.hfEndpoint} : {}),
        ...(hfToken ? {hfToken} : {}),
        ...(options.onProgress ? {onProgress: options.onProgress} : {}),
        ...(options.signal ? {signal: options.signal} : {})
    });
    return {...provisioned, name: modelName(candidate.variant, candidate.quant)};
}

/** The plan as one debug line per candidate: the decision must be explainable from the journal. */
export function logPlan(log: Logger, plan: ModelPlan): void {
    log.debug("model plan", {budgetBytes: plan.budgetBytes, budgetSource: plan.budgetSource, reserveBytes: plan.reserveBytes,
        choice: plan.choice ? modelName(plan.choice.variant, plan.choice.quant) : null, reason: plan.reason});
    for (const c of plan.candidates) {
        log.debug("model candidate", {model: modelName(c.variant, c.quant), requiredBytes: c.requiredBytes, fits: c.fits,
            eligible: c.eligible, source: c.source, reason: c.reason});
    }
}

/** `--variant` values accepted by the CLI. */
export function parseVariantFlag(value: string): VariantPin {
    const v = value.toLowerCase();
    if (v === "auto" || isModelVariant(v)) return v;
    throw new Error(`--variant must be auto, ${MODEL_VARIANTS.join(", ")} (got "${value}")`);
}

async function isFile(path: string): Promise<boolean> {
    return stat(path).then((s) => s.isFile(), () => false);
}
