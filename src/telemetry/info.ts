/**
 * The retained `{base}/{device}/info` topic: what this device is and what it serves. Built from
 * facts probed once at start-up plus cheap getters, so it can be rebuilt on every health tick and
 * republished only when it changed (or after a reconnect, since a broker may have forgotten it).
 */
import type {DeviceFacts} from "../system/probe.js";
import type {ProtocolLimits} from "../mqtt/request-fields.js";

export interface InfoVersions {
    qwenEdge: string;
    nodeLlamaCpp: string;
    node: string;
}

/** The request limits a client must respect, plus the queue and context shape. */
export interface InfoLimits extends ProtocolLimits {
    maxQueue: number;
    parallel: number;
    contextSize: number;
}

export interface InfoModel {
    name: string;
    file: string;
    sizeBytes: number | null;
    state: "loading" | "ready" | "failed";
    threads: number;
    /** the planner's decision with every candidate and its requirement; null when the model was given by path */
    decision: unknown;
    /** why this model, in one line: the plan's reason, or "given by model.path"; null before it is chosen */
    reason: string | null;
}

export interface InfoMessage {
    device: string;
    versions: InfoVersions;
    deviceFacts: {
        board: string | null;
        isRaspberryPi: boolean;
        arch: string;
        platform: string;
        cpu: {model: string | null; cores: number; available: number; quota: number | null};
        memory: {totalBytes: number; swapTotalBytes: number; cgroupLimitBytes: number | null};
    } | null;
    model: InfoModel;
    limits: InfoLimits;
    topics: {request: string; cancel: string; response: string; status: string; health: string; fleet: string | null};
    telemetry: {intervalSeconds: number; healthExpirySeconds: number};
    requestSchema: object;
    /** when this content last changed */
    updatedAt: string;
}

export interface InfoInput {
    device: string;
    versions: InfoVersions;
    facts: DeviceFacts | null;
    model: InfoModel;
    limits: InfoLimits;
    topics: InfoMessage["topics"];
    telemetry: InfoMessage["telemetry"];
    requestSchema: object;
}

/** Pure: the info message without its timestamp. */
export function buildInfo(input: InfoInput): Omit<InfoMessage, "updatedAt"> {
    const f = input.facts;
    return {
        device: input.device,
        versions: input.versions,
        deviceFacts: f === null ? null : {
            board: f.board.model, isRaspberryPi: f.board.isRaspberryPi, arch: f.board.arch, platform: process.platform,
            cpu: {model: f.cpu.model, cores: f.cpu.logical, available: f.cpu.available, quota: f.cpu.quota},
            memory: {totalBytes: f.memory.totalBytes, swapTotalBytes: f.memory.swapTotalBytes, cgroupLimitBytes: f.memory.cgroup.limitBytes}
        },
        model: input.model,
        limits: input.limits,
        topics: input.topics,
        telemetry: input.telemetry,
        requestSchema: input.requestSchema
    };
}

export interface InfoPublisherDeps {
    topic: string;
    build: () => Omit<InfoMessage, "updatedAt">;
    /** publishes retained; resolves when the broker has it */
    publish: (topic: string, payload: string) => Promise<void>;
    connected: () => boolean;
    onError: (err: Error) => void;
}

export class InfoPublisher {
    private readonly deps: InfoPublisherDeps;
    private lastContent = "";
    private lastMessage: InfoMessage | null = null;
    private publishedContent: string | null = null;

    public constructor(deps: InfoPublisherDeps) {
        this.deps = deps;
    }

    public get message(): InfoMessage | null {
        return this.lastMessage;
    }

    /** Rebuilds; publishes when the content changed since the last publish, or always with `force`. */
    public async refresh(force = false): Promise<void> {
        const content = this.deps.build();
        const key = JSON.stringify(content);
        if (key !== this.lastContent || this.lastMessage === null) {
            this.lastContent = key;
            this.lastMessage = {...content, updatedAt: new Date().toISOString()};
        }
        if (!this.deps.connected() || (!force && this.publishedContent === key)) return;
        this.publishedContent = key;
        try {
            await this.deps.publish(this.deps.topic, JSON.stringify(this.lastMessage));
        } catch (err) {
            this.publishedContent = null;
            this.deps.onError(err as Error);
        }
    }
}
