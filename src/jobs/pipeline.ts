/**
 * The request pipeline: one MQTT message to one answer. Intake (route or native request, validate,
 * check ids, journal durably: resolving sends the PUBACK), the queue, the run on the engine, and the
 * answer (replies.ts). Also cancels and the replay of jobs journaled before a restart. The daemon builds
 * it with the link, store, scheduler, engine and router, and routes messages to it.
 *
 * Exactly once, by construction: the job store owns "is this request pending or answered", keyed by id
 * and reply topic (jobKey); the scheduler refuses a key it holds; the daemon replays the journal in the
 * same tick it starts the link, so no live message is taken before the replayed ones are queued.
 * Intake is total: whatever a message holds and whatever fails, it is acknowledged, and answered with an
 * error wherever a reply can go (docs/DESIGN.md, "Delivery").
 */
import {createHash} from "node:crypto";
import type {IPublishPacket} from "mqtt";
import {describeError, RequestError} from "../errors.js";
import type {EventBus, ModelStateChange} from "../events.js";
import type {Engine, GenerateResult} from "../inference/engine.js";
import type {ActionExecutor} from "../actions/executor.js";
import type {DurableOutgoingStore} from "../mqtt/outgoing-store.js";
import type {ChatMessage} from "../inference/generation.js";
import type {Scheduler, StopReason} from "../inference/scheduler.js";
import {StreamCoalescer} from "../inference/stream.js";
import type {Logger} from "../log.js";
import {chunkReply, okReply, parseCancel, parseRequest, type InferenceRequest, type ProtocolLimits, type ReplyTarget} from "../mqtt/protocol.js";
import {replyTopicProblem, type ReplyPolicy} from "../mqtt/reply-policy.js";
import type {TopicLayout} from "../mqtt/topics.js";
import {textAnswer, type Router} from "../routes/router.js";
import {decodeJob, encodeJob} from "./codec.js";
import {conversationKey, type ConversationStore} from "./conversations.js";
import {ReplySender, type ReplyLink} from "./replies.js";
import {jobKey, StorageError, type JobStore, type StoredJob} from "./store.js";

/** What the scheduler queues and runs; `id` is the job's key (the request id scoped by its reply topic). */
export interface Job {
    id: string;
    deadline: number;
    request: InferenceRequest;
    /** a conversation's key: its turns run one at a time, in order */
    exclusive?: string;
}

/** What the scheduler queues for a request: a conversation's turns are exclusive. */
function jobFor(key: string, request: InferenceRequest): Job {
    return {id: key, deadline: request.deadline, request,
        ...(request.conversation !== undefined ? {exclusive: conversationKey(request.conversation, request.reply.topic)} : {})};
}

export interface PipelineDeps {
    log: Logger;
    layout: TopicLayout;
    limits: ProtocolLimits;
    /** where replies may go (mqtt/reply-policy.ts); null: only what the broker takes */
    policy: ReplyPolicy | null;
    link: ReplyLink;
    store: JobStore;
    scheduler: Scheduler<Job>;
    engine: Pick<Engine, "generate">;
    router: Router;
    events: EventBus;
    conversations: ConversationStore;
    /** the configured device actions (src/actions/executor.ts) */
    actions: ActionExecutor;
    /** final replies kept on disk until the broker completes them (src/mqtt/outgoing-store.ts); without it, QoS 1 */
    outgoing?: DurableOutgoingStore;
    /** streamed chunks are coalesced over this many milliseconds */
    streamIntervalMs: number;
    /** how long answered ids are remembered (the job store's window), for the duplicate_id message */
    dedupeWindowMs: number;
    /** test seam: waits before retrying a refused reply */
    replyRetryDelaysMs?: readonly number[];
}

export class RequestPipeline {
    private readonly deps: PipelineDeps;
    private readonly replies: ReplySender;
    private intakeOpen = true;
    private model: ModelStateChange = {state: "loading", name: "", path: "", plan: null, reason: null};
    private storageProblem: string | null = null;

    public constructor(deps: PipelineDeps) {
        this.deps = deps;
        this.replies = new ReplySender({log: deps.log, link: deps.link, store: deps.store, router: deps.router, events: deps.events,
            device: deps.layout.device, modelName: () => this.model.name, ...(deps.outgoing ? {outgoing: deps.outgoing} : {}),
            ...(deps.replyRetryDelaysMs ? {retryDelaysMs: deps.replyRetryDelaysMs} : {})});
    }

    /**
     * Listens for the model's state: requests are refused while it failed, queued ones answered then. A
     * journal already unwritable (the store was started first) is reported from here, so that the first
     * accept that succeeds clears it.
     */
    public start(): void {
        this.noteStorage(this.deps.store.stats().unavailable);
        this.deps.events.on("pipeline", "modelState", (change) => {
            this.model = change;
            if (change.state === "failed") this.failQueued();
        });
    }

    /** Stops taking requests: what arrives now is left unacknowledged, for the broker to redeliver. */
    public close(): void {
        this.intakeOpen = false;
        this.replies.stop();
        this.deps.events.off("pipeline");
    }

    /** Intake: validate, journal durably, queue. Resolving sends the PUBACK; it rejects only once closed. */
    public async intake(packet: IPublishPacket): Promise<void> {
        if (!this.intakeOpen) throw new Error("shutting down: left for redelivery");
        try {
            this.take(packet);
        } catch (err) {
            // Unreachable by design; a last line so that no message ever stays unacknowledged (it would fill
            // the broker's in-flight window for this session and stop every later request).
            this.deps.log.error("intake failed; the message is acknowledged without an answer", {topic: packet.topic,
                bytes: packet.payload.length, ...describeError(err)});
        }
    }

    /** `{"id": "..."}` or the bare id: cancels a queued or running request (on any reply topic). */
    public cancel(payload: Buffer): void {
        const parsed = parseCancel(payload);
        if (!parsed.ok) {
            this.deps.log.warn("cancel refused", {code: parsed.error.code, message: parsed.error.message});
            return;
        }
        const keys = this.deps.store.pendingKeys(parsed.id);
        const found = keys.filter((key) => this.deps.scheduler.cancel(key)).length;
        this.deps.log.info("cancel", {id: parsed.id, found});
    }

    /**
     * Jobs accepted before a crash or restart run again (or time out) exactly once. Called in the same
     * tick as the link starts, so they are queued before any live message. A job whose reply topic the
     * policy or broker now refuses is finished with an error on the device's response topic instead.
     */
    public replay(unfinished: readonly StoredJob[]): void {
        for (const stored of unfinished) {
            const decoded = decodeJob(stored.request);
            if (!decoded) {
                this.deps.log.warn("unreadable journaled job dropped", {key: stored.key});
                this.deps.store.discard(stored.key);
                continue;
            }
            const {request} = decoded;
            // its final reply reached the outgoing store before the stop: the broker has it, or gets it (same packet id) on connect
            if (this.deps.outgoing?.replyKnown(request.reply.topic, request.id) === true) {
                this.deps.log.info("journaled request already answered; its reply goes to the broker once", {id: request.id});
                this.deps.store.finish(stored.key);
                continue;
            }
            const problem = replyTopicProblem(request.reply.topic, this.deps.policy, {maximumPacketSize: this.deps.link.brokerMaximumPacketSize()});
            if (problem !== null) {
                this.deps.log.warn("journaled job's reply topic refused; answered on the response topic", {id: request.id, problem});
                this.replies.error(request.id, stored.key, {topic: this.deps.layout.response, via: "default"},
                    new RequestError("invalid_request", `the reply topic ${problem}`, {field: "replyTo"}));
                continue;
            }
            this.deps.log.info("replaying unfinished request", {id: request.id, ageMs: Date.now() - request.receivedAt});
            this.deps.scheduler.submit(jobFor(stored.key, request), {force: true});
        }
        // every delivered reply's job has its `done` now; once that is on disk the store can forget them
        if (this.deps.outgoing && this.deps.store.sync()) this.deps.outgoing.settleAll();
    }

    /** The scheduler's `expire`: a job that ended before it ran. */
    public expire(job: Job, reason: Exclude<StopReason, "shutdown">): void {
        this.replies.error(job.request.id, job.id, job.request.reply,
            new RequestError(reason, reason === "timeout" ? "the request's deadline passed before it could run" : "cancelled before it ran"));
    }

    /** The scheduler's `run`: one generation, answered. Never rejects for request-level failures. */
    public async run(job: Job, signal: AbortSignal, queuedMs: number): Promise<void> {
        const r = job.request;
        const {log, engine, events, router, conversations} = this.deps;
        if (r.conversation !== undefined && r.prompt === undefined && r.toolResults === undefined) return this.endConversation(job, r.conversation);
        // A conversation's turn: the kept history before the new prompt, or before the results of its last calls
        const history = r.conversation !== undefined ? conversations.history(r.conversation, r.reply.topic, job.id) : null;
        const order = r.conversation !== undefined ? turnOrderProblem(r.conversation, history?.awaitingResults ?? [], r.toolResults) : null;
        if (order !== null) {
            log.warn("request refused", {id: r.id, code: order.code, conversation: r.conversation, message: order.message});
            this.replies.error(r.id, job.id, r.reply, order);
            return;
        }
        const grantProblem = r.actions === undefined ? null : actionGrantProblem(r.actions, r.tools?.map((t) => t.name) ?? [], this.deps.actions);
        if (grantProblem !== null) {
            log.warn("request refused", {id: r.id, code: grantProblem.code, field: "actions", message: grantProblem.message});
            this.replies.error(r.id, job.id, r.reply, grantProblem);
            return;
        }
        const granted = r.actions === undefined ? null : this.deps.actions.forRequest(r.id, r.actions);
        const system = r.system ?? history?.system ?? undefined;
        const next: ChatMessage[] = r.toolResults !== undefined
            ? r.toolResults.map((t) => ({role: "tool", content: t.content, toolCallId: t.toolCallId}))
            : [{role: "user", content: r.prompt ?? ""}];
        const options = history === null ? r : {...r, messages: [...history.messages, ...next], prompt: undefined, ...(system !== undefined ? {system} : {})};
        const stream = r.stream ? new StreamCoalescer({
            intervalMs: this.deps.streamIntervalMs,
            emit: (seq, delta, part) => this.replies.chunk(r.reply, JSON.stringify(chunkReply(r.id, seq, delta, part)))
        }) : null;
        let result: GenerateResult;
        try {
            result = await engine.generate({id: r.id, options, signal,
                ...(granted !== null ? {actions: this.deps.actions.definitions(r.actions ?? []), runAction: (call) => granted.run(call)} : {}),
                ...(stream ? {onTextDelta: (delta: string) => stream.push(delta), onThoughtDelta: (delta: string) => stream.push(delta, "thinking")} : {})});
        } catch (err) {
            stream?.close();
            const error = err instanceof RequestError ? conversationError(err, r.conversation, history) : new RequestError("internal", "generation failed");
            if (!(err instanceof RequestError)) log.error("generation failed", {id: r.id, ...describeError(err)});
            this.replies.error(r.id, job.id, r.reply, error);
            return;
        }
        stream?.close();
        const reason = signal.reason as StopReason | undefined;
        if (result.finishReason === "aborted" && reason === "shutdown") {
            log.info("generation stopped by shutdown; kept for the next start", {id: r.id, completionTokens: result.completionTokens});
            return;
        }
        const finishReason = result.finishReason === "aborted" ? (reason === "timeout" ? "timeout" : "cancelled") : result.finishReason;
        // A turn cut off by a timeout or cancel is not kept: its answer is not one the client asked to build on.
        const conversation = r.conversation === undefined || result.finishReason === "aborted" ? undefined
            : r.endConversation === true ? conversations.end(r.conversation, r.reply.topic)
                : conversations.record(r.conversation, r.reply.topic, {job: job.id, answer: result.text,
                    ...(r.prompt !== undefined ? {prompt: r.prompt} : {}), ...(r.toolResults !== undefined ? {toolResults: r.toolResults} : {}),
                    ...(result.thinking !== null ? {thinking: result.thinking} : {}), ...(result.toolCalls.length > 0 ? {toolCalls: result.toolCalls} : {}),
                    system: r.system ?? history?.system ?? null, tokens: result.promptTokens + result.completionTokens});
        // after the first token: the rate of generation alone, prompt evaluation excluded
        const genSeconds = (result.totalMs - (result.ttftMs ?? 0)) / 1000;
        const reply = okReply({
            id: r.id, text: result.text, finishReason,
            ...(result.thinking !== null ? {thinking: result.thinking} : {}),
            ...(result.json !== undefined ? {json: result.json} : {}),
            ...(result.toolCalls.length > 0 ? {toolCalls: result.toolCalls} : {}),
            ...(granted !== null && granted.records.length > 0 ? {actions: granted.records} : {}),
            usage: {promptTokens: result.promptTokens, completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens,
                cachedPromptTokens: result.cachedPromptTokens},
            timing: {queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: queuedMs + result.totalMs,
                tokensPerSecond: genSeconds > 0 && result.completionTokens > 1 ? (result.completionTokens - 1) / genSeconds : 0},
            ...(conversation !== undefined ? {conversation} : {}),
            model: this.model.name, device: this.deps.layout.device
        });
        log.info("request done", {id: r.id, ...routeField(r.reply), finishReason, promptTokens: result.promptTokens,
            completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens, cachedPromptTokens: result.cachedPromptTokens,
            queueMs: queuedMs, ttftMs: result.ttftMs,
            totalMs: result.totalMs, textBytes: Buffer.byteLength(result.text),
            ...(conversation !== undefined ? {conversation: conversation.id, turns: conversation.turns, ended: conversation.ended === true} : {})});
        events.emit("generationDone", {id: r.id, promptTokens: result.promptTokens, completionTokens: result.completionTokens,
            thinkingTokens: result.thinkingTokens, cachedPromptTokens: result.cachedPromptTokens, ttftMs: result.ttftMs, totalMs: result.totalMs});
        // A "text" route publishes the answer alone, or nothing when there is none (see textAnswer).
        const text = r.reply.format === "text" ? textAnswer(reply) : undefined;
        router.note(r.reply, text === null ? "failed" : "answered", {id: r.id, code: text === null ? `no_answer_${finishReason}` : finishReason});
        this.replies.final(r.id, job.id, r.reply, text === undefined ? JSON.stringify(reply) : text, true);
    }

    /** `{"conversation", "endConversation": true}` without a prompt: forgotten, in its turn. */
    private endConversation(job: Job, name: string): void {
        const r = job.request;
        const info = this.deps.conversations.end(name, r.reply.topic);
        this.deps.log.info("conversation ended", {id: r.id, conversation: name, turns: info.turns, tokens: info.tokens});
        this.deps.router.note(r.reply, "answered", {id: r.id, code: "ended"});
        this.replies.final(r.id, job.id, r.reply, JSON.stringify({id: r.id, status: "ok", conversation: info, device: this.deps.layout.device}), true);
    }

    private take(packet: IPublishPacket): void {
        const {layout, limits, router, store, scheduler, log, policy, link} = this.deps;
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
        }, layout, limits, {policy, maximumPacketSize: link.brokerMaximumPacketSize()});
        if (!parsed.ok) {
            log.warn("request refused", {id: parsed.id, code: parsed.error.code, bytes: payload.length, source, message: parsed.error.message});
            this.replies.error(parsed.id, null, parsed.reply, parsed.error);
            return;
        }
        const request = parsed.request;
        const key = jobKey(request.id, request.reply.topic);
        const hash = createHash("sha256").update(topic).update("\0").update(props.correlationData ?? "").update("\0").update(payload).digest("hex");
        if (this.alreadyKnown(request, key, hash, packet)) return;
        const refuse = (error: RequestError): void => {
            log.warn("request refused", {id: request.id, code: error.code, source, message: error.message});
            this.replies.error(request.id, null, request.reply, error);
        };
        if (request.conversation !== undefined && !this.deps.conversations.enabled)
            return refuse(new RequestError("invalid_request", "this device keeps no conversations (conversations.maxCount is 0): send the history as messages", {field: "conversation"}));
        if (this.model.state === "failed") return refuse(this.unavailable());
        if (scheduler.isFull()) return refuse(scheduler.refuse());
        try {
            store.accept(key, encodeJob({request, messageHash: hash}), hash);
        } catch (err) {
            if (!(err instanceof StorageError)) throw err;
            this.noteStorage(err.message);
            return refuse(err.reason === "capped"
                ? new RequestError("queue_full", `too many requests are waiting: ${err.message}`, {retryAfterMs: scheduler.retryAfterMs()})
                : new RequestError("unavailable", `the device cannot keep requests now: ${err.message}`));
        }
        this.noteStorage(null);
        router.note(request.reply, "accepted");
        const stats = scheduler.stats();
        log.info("request accepted", {id: request.id, source, ...routeField(request.reply), bytes: payload.length, stream: request.stream,
            maxTokens: request.maxTokens, queued: stats.queued});
        scheduler.submit(jobFor(key, request));
    }

    /**
     * A message seen before, answered so that an id never meets silence (docs/DESIGN.md, "Ids"):
     * - the broker's redelivery (dup flag) of a message already taken: dropped, it is answered once;
     * - a request retained at the broker: refused once (it would run again at every reconnect);
     * - an id pending on this reply topic: nothing new, the pending one will be answered;
     * - an id answered on this reply topic within the window: the same request gets the same answer
     *   again; another request under that id gets duplicate_id.
     */
    private alreadyKnown(request: InferenceRequest, key: string, hash: string, packet: IPublishPacket): boolean {
        const {store, log} = this.deps;
        const seenKey = store.keyForHash(hash);
        if (packet.dup && seenKey !== null) {
            log.info("redelivered copy dropped", {id: request.id});
            return true;
        }
        if (packet.retain) {
            if (seenKey === null) {
                store.rememberHash(hash, key);
                this.replies.error(request.id, null, request.reply, new RequestError("invalid_request",
                    "a retained request is not run: the broker would deliver it again at every reconnect; publish requests without the retain flag",
                    {field: "retain"}));
            }
            log.warn("retained request refused", {id: request.id, answered: seenKey === null});
            return true;
        }
        const known = store.lookup(key);
        if (known === null) return false;
        if (known.state === "pending") {
            // its answer is out already, awaiting the broker's acknowledgement: the same request gets it again
            const sent = known.hash === hash ? this.replies.inFlight(key) : null;
            if (sent !== null) {
                log.info("request seen before: its answer sent again", {id: request.id, answeredAt: "now"});
                this.replies.again(sent);
                return true;
            }
            log.info("duplicate of a pending request: it will be answered once", {id: request.id});
            return true;
        }
        const when = new Date(known.at).toISOString();
        const windowMinutes = Math.round(this.deps.dedupeWindowMs / 60_000);
        if (known.hash === hash && known.reply !== null) {
            log.info("request seen before: its answer sent again", {id: request.id, answeredAt: when});
            this.replies.again(known.reply);
        } else {
            log.info("request id used again", {id: request.id, answeredAt: when, sameRequest: known.hash === hash});
            this.replies.error(request.id, null, request.reply, new RequestError("duplicate_id", known.hash === hash
                ? `request ${request.id} was answered at ${when}, and its answer is no longer kept; send it with a new id`
                : `id ${request.id} was used by another request at ${when}; ids are remembered for ${windowMinutes} minutes on each reply topic: use a new id`,
            {answeredAt: when}));
        }
        return true;
    }

    private noteStorage(reason: string | null): void {
        if (reason === this.storageProblem) return;
        this.storageProblem = reason;
        this.deps.events.emit("storage", {reason});
    }

    private unavailable(): RequestError {
        return new RequestError("model_unavailable", `the model is unavailable: ${this.model.reason ?? "it failed to load"}`);
    }

    /** The model cannot load: every queued request gets model_unavailable. */
    private failQueued(): void {
        for (const job of this.deps.scheduler.takeQueued()) this.replies.error(job.request.id, job.id, job.request.reply, this.unavailable());
    }
}

/** A grant naming an action this device does not have, or an action and a client tool of the same name. */
function actionGrantProblem(granted: readonly string[], tools: readonly string[], executor: ActionExecutor): RequestError | null {
    const unknown = executor.unknown(granted);
    if (unknown.length > 0) {
        const names = executor.names();
        return new RequestError("invalid_request", `actions names ${unknown.map((n) => JSON.stringify(n)).join(", ")}, which ${unknown.length === 1 ? "is" : "are"} `
            + `not configured on this device (configured: ${names.length > 0 ? names.join(", ") : "none"})`, {field: "actions"});
    }
    const clash = granted.find((name) => tools.includes(name));
    return clash === undefined ? null
        : new RequestError("invalid_request", `${JSON.stringify(clash)} is both a granted action and one of the request's tools; rename the tool`, {field: "tools"});
}

/**
 * A conversation whose last answer called tools takes their results next, and only then a prompt; results
 * answer exactly the calls it made.
 */
function turnOrderProblem(conversation: string, awaiting: readonly string[], results: ReadonlyArray<{toolCallId: string}> | undefined): RequestError | null {
    if (results === undefined) {
        return awaiting.length === 0 ? null : new RequestError("invalid_request", `conversation ${conversation} waits for the results of its tool calls `
            + `(${awaiting.map((id) => JSON.stringify(id)).join(", ")}): send them as toolResults, or end the conversation`, {field: "prompt", awaiting: [...awaiting]});
    }
    const given = new Set(results.map((t) => t.toolCallId));
    const missing = awaiting.filter((id) => !given.has(id));
    const unknown = [...given].filter((id) => !awaiting.includes(id));
    if (missing.length === 0 && unknown.length === 0) return null;
    return new RequestError("invalid_request", awaiting.length === 0
        ? `conversation ${conversation} has no tool calls waiting for results`
        : `toolResults must answer exactly the calls of conversation ${conversation}'s last answer (${awaiting.map((id) => JSON.stringify(id)).join(", ")})`
            + `${missing.length > 0 ? `; missing ${missing.map((id) => JSON.stringify(id)).join(", ")}` : ""}`
            + `${unknown.length > 0 ? `; not waiting: ${unknown.map((id) => JSON.stringify(id.slice(0, 64))).join(", ")}` : ""}`,
    {field: "toolResults", awaiting: [...awaiting]});
}

/**
 * A conversation's history that no longer fits: the context error, with the history's share of the
 * numbers and what to do. Other errors pass as they are.
 */
function conversationError(err: RequestError, conversation: string | undefined, history: {turns: number; tokens: number} | null): RequestError {
    if (conversation === undefined || history === null || err.code !== "exceed_context_size") return err;
    const d = err.details as {promptTokens?: number; maxTokens?: number; contextSize?: number};
    return new RequestError("exceed_context_size",
        `conversation ${conversation} no longer fits: its ${history.turns} turns and this prompt come to ${d.promptTokens} tokens, and with ` +
        `maxTokens ${d.maxTokens} that exceeds the context size (${d.contextSize} tokens); end it ({"conversation", "endConversation": true}) ` +
        "and start a new one, or ask with a smaller maxTokens", {...err.details, conversation, turns: history.turns, historyTokens: history.tokens});
}

/** Log field naming the route a request came from. */
function routeField(reply: ReplyTarget): {route?: string} {
    return reply.route !== undefined ? {route: reply.route} : {};
}
