/**
 * The request pipeline: one MQTT message to one answer. Intake (route or native request, validate,
 * drop duplicates, journal durably: resolving sends the PUBACK), the queue, the run on the engine, and
 * the answer (replies.ts). Also cancels and the replay of jobs journaled before a restart. The daemon
 * builds it with the link, store, scheduler, engine and router, and routes messages to it.
 */
import {createHash} from "node:crypto";
import type {IPublishPacket} from "mqtt";
import {describeError, RequestError} from "../errors.js";
import type {EventBus, ModelStateChange} from "../events.js";
import type {Engine, GenerateResult} from "../inference/engine.js";
import type {Scheduler, StopReason} from "../inference/scheduler.js";
import {StreamCoalescer} from "../inference/stream.js";
import type {Logger} from "../log.js";
import {chunkReply, okReply, parseCancel, parseRequest, type InferenceRequest, type ProtocolLimits, type ReplyTarget} from "../mqtt/protocol.js";
import type {TopicLayout} from "../mqtt/topics.js";
import {textAnswer, type Router} from "../routes/router.js";
import {decodeJob, encodeJob} from "./codec.js";
import {ReplySender, type ReplyLink} from "./replies.js";
import type {JobStore, StoredJob} from "./store.js";

/** What the scheduler queues and runs. */
export interface Job {
    id: string;
    deadline: number;
    request: InferenceRequest;
}

export interface PipelineDeps {
    log: Logger;
    layout: TopicLayout;
    limits: ProtocolLimits;
    link: ReplyLink;
    store: JobStore;
    scheduler: Scheduler<Job>;
    engine: Pick<Engine, "generate">;
    router: Router;
    events: EventBus;
    /** streamed chunks are coalesced over this many milliseconds */
    streamIntervalMs: number;
}

export class RequestPipeline {
    private readonly deps: PipelineDeps;
    private readonly replies: ReplySender;
    private intakeOpen = true;
    private model: ModelStateChange = {state: "loading", name: "", path: "", plan: null, reason: null};
    /** messageHash -> id of pending id-less requests, to drop a redelivered copy */
    private readonly pendingHashes = new Map<string, string>();

    public constructor(deps: PipelineDeps) {
        this.deps = deps;
        this.replies = new ReplySender({log: deps.log, link: deps.link, store: deps.store, router: deps.router, events: deps.events,
            device: deps.layout.device, modelName: () => this.model.name,
            onFinished: (id) => {
                for (const [hash, pendingId] of this.pendingHashes) if (pendingId === id) this.pendingHashes.delete(hash);
            }});
    }

    /** Listens for the model's state: requests are refused while it failed, queued ones answered then. */
    public start(): void {
        this.deps.events.on("pipeline", "modelState", (change) => {
            this.model = change;
            if (change.state === "failed") this.failQueued();
        });
    }

    /** Stops taking requests: what arrives now is left unacknowledged, for the broker to redeliver. */
    public close(): void {
        this.intakeOpen = false;
        this.deps.events.off("pipeline");
    }

    /** Intake: validate, journal durably, queue. Resolving sends the PUBACK. */
    public async intake(packet: IPublishPacket): Promise<void> {
        if (!this.intakeOpen) throw new Error("shutting down: left for redelivery");
        const {layout, limits, router, store, scheduler, log} = this.deps;
        const topic = packet.topic;
        const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload;
        const props = packet.properties ?? {};
        const receivedAt = Date.now();
        const routed = router.intake({topic, payload, receivedAt, retain: packet.retain,
            ...(props.messageExpiryInterval !== undefined ? {messageExpirySeconds: props.messageExpiryInterval} : {})});
        if (routed === "dropped") return;
        const source = routed?.source ?? (topic === layout.request ? "device" : "fleet");
        const parsed = routed?.parsed ?? parseRequest({
            topic, payload, receivedAt, source,
            ...(props.responseTopic !== undefined ? {responseTopic: props.responseTopic} : {}),
            ...(props.correlationData !== undefined ? {correlationData: props.correlationData} : {}),
            ...(props.messageExpiryInterval !== undefined ? {messageExpirySeconds: props.messageExpiryInterval} : {})
        }, layout, limits);
        if (!parsed.ok) {
            log.warn("request refused", {id: parsed.id, code: parsed.error.code, bytes: payload.length, source, message: parsed.error.message});
            this.replies.error(parsed.id, parsed.reply, parsed.error);
            return;
        }
        const request = parsed.request;
        const messageHash = createHash("sha256").update(topic).update("\0").update(props.correlationData ?? "").update("\0").update(payload).digest("hex");
        if (this.isDuplicate(request, messageHash, packet.dup)) return;
        if (this.model.state === "failed") {
            this.replies.error(request.id, request.reply, this.unavailable());
            return;
        }
        const stats = scheduler.stats();
        if (scheduler.isFull()) {
            const error = scheduler.refuse();
            log.warn("request refused", {id: request.id, code: error.code, queued: stats.queued, retryAfterMs: error.details.retryAfterMs});
            this.replies.error(request.id, request.reply, error);
            return;
        }
        await store.accept(request.id, encodeJob({request, messageHash}));
        this.pendingHashes.set(messageHash, request.id);
        router.note(request.reply, "accepted");
        log.info("request accepted", {id: request.id, source, ...routeField(request.reply), bytes: payload.length, stream: request.stream,
            maxTokens: request.maxTokens, queued: stats.queued});
        scheduler.submit({id: request.id, deadline: request.deadline, request});
    }

    /** `{"id": "..."}` or the bare id: cancels a queued or running request. */
    public cancel(payload: Buffer): void {
        const parsed = parseCancel(payload);
        if (!parsed.ok) {
            this.deps.log.warn("cancel refused", {code: parsed.error.code, message: parsed.error.message});
            return;
        }
        const found = this.deps.scheduler.cancel(parsed.id);
        this.deps.log.info("cancel", {id: parsed.id, found});
    }

    /** Jobs accepted before a crash or restart run again (or time out) exactly once. */
    public replay(unfinished: readonly StoredJob[]): void {
        for (const stored of unfinished) {
            const decoded = decodeJob(stored.request);
            if (!decoded) {
                this.deps.log.warn("unreadable journaled job dropped", {key: stored.key});
                void this.deps.store.discard(stored.key);
                continue;
            }
            const {request, messageHash} = decoded;
            if (messageHash) this.pendingHashes.set(messageHash, request.id);
            this.deps.log.info("replaying unfinished request", {id: request.id, ageMs: Date.now() - request.receivedAt});
            try {
                this.deps.scheduler.submit({id: request.id, deadline: request.deadline, request}, {force: true});
            } catch (err) {
                this.replies.error(request.id, request.reply, err instanceof RequestError ? err : new RequestError("internal", "replay failed"));
            }
        }
    }

    /** The scheduler's `expire`: a job that ended before it ran. */
    public expire(job: Job, reason: Exclude<StopReason, "shutdown">): void {
        this.replies.error(job.request.id, job.request.reply,
            new RequestError(reason, reason === "timeout" ? "the request's deadline passed before it could run" : "cancelled before it ran"));
    }

    /** The scheduler's `run`: one generation, answered. Never rejects for request-level failures. */
    public async run(job: Job, signal: AbortSignal, queuedMs: number): Promise<void> {
        const r = job.request;
        const {log, engine, events, router} = this.deps;
        const stream = r.stream ? new StreamCoalescer({
            intervalMs: this.deps.streamIntervalMs,
            emit: (seq, delta, part) => this.replies.chunk(r.reply, JSON.stringify(chunkReply(r.id, seq, delta, part)))
        }) : null;
        let result: GenerateResult;
        try {
            result = await engine.generate({id: r.id, options: r, signal,
                ...(stream ? {onTextDelta: (delta: string) => stream.push(delta), onThoughtDelta: (delta: string) => stream.push(delta, "thinking")} : {})});
        } catch (err) {
            stream?.close();
            const error = err instanceof RequestError ? err : new RequestError("internal", "generation failed");
            if (!(err instanceof RequestError)) log.error("generation failed", {id: r.id, ...describeError(err)});
            this.replies.error(r.id, r.reply, error);
            return;
        }
        stream?.close();
        const reason = signal.reason as StopReason | undefined;
        if (result.finishReason === "aborted" && reason === "shutdown") {
            log.info("generation stopped by shutdown; kept for the next start", {id: r.id, completionTokens: result.completionTokens});
            return;
        }
        const finishReason = result.finishReason === "aborted" ? (reason === "timeout" ? "timeout" : "cancelled") : result.finishReason;
        // after the first token: the rate of generation alone, prompt evaluation excluded
        const genSeconds = (result.totalMs - (result.ttftMs ?? 0)) / 1000;
        const reply = okReply({
            id: r.id, text: result.text, finishReason,
            ...(result.thinking !== null ? {thinking: result.thinking} : {}),
            ...(result.json !== undefined ? {json: result.json} : {}),
            usage: {promptTokens: result.promptTokens, completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens},
            timing: {queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: queuedMs + result.totalMs,
                tokensPerSecond: genSeconds > 0 && result.completionTokens > 1 ? (result.completionTokens - 1) / genSeconds : 0},
            model: this.model.name, device: this.deps.layout.device
        });
        log.info("request done", {id: r.id, ...routeField(r.reply), finishReason, promptTokens: result.promptTokens,
            completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens, queueMs: queuedMs, ttftMs: result.ttftMs,
            totalMs: result.totalMs, textBytes: Buffer.byteLength(result.text)});
        events.emit("generationDone", {id: r.id, promptTokens: result.promptTokens, completionTokens: result.completionTokens,
            thinkingTokens: result.thinkingTokens, cachedPromptTokens: 0, ttftMs: result.ttftMs, totalMs: result.totalMs});
        // A "text" route publishes the answer alone, or nothing when there is none (see textAnswer).
        const text = r.reply.format === "text" ? textAnswer(reply) : undefined;
        router.note(r.reply, text === null ? "failed" : "answered", {id: r.id, code: text === null ? `no_answer_${finishReason}` : finishReason});
        this.replies.final(r.id, r.reply, text === undefined ? JSON.stringify(reply) : text, true);
    }

    private isDuplicate(request: InferenceRequest, messageHash: string, dup: boolean): boolean {
        const byId = this.deps.store.lookup(request.id);
        const byHash = dup && this.pendingHashes.has(messageHash);
        if (byId === null && !byHash) return false;
        this.deps.log.info("duplicate request dropped", {id: request.id, previous: byId ?? "pending", dup});
        return true;
    }

    private unavailable(): RequestError {
        return new RequestError("model_unavailable", `the model is unavailable: ${this.model.reason ?? "it failed to load"}`);
    }

    /** The model cannot load: every queued request gets model_unavailable. */
    private failQueued(): void {
        for (const job of this.deps.scheduler.takeQueued()) this.replies.error(job.id, job.request.reply, this.unavailable());
    }
}

/** Log field naming the route a request came from. */
function routeField(reply: ReplyTarget): {route?: string} {
    return reply.route !== undefined ? {route: reply.route} : {};
}
