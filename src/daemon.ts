/**
 * The composition root: builds every part with its deps, starts them in order, stops them in
 * reverse; the request path itself is src/jobs/pipeline.ts. Start-up: job store -> MQTT link
 * (status `starting`) -> replay of unfinished jobs -> model (status `loading`) -> `online`.
 * Requests that arrive while the model loads are accepted (journaled, acked) and wait in the queue.
 */
import {randomBytes} from "node:crypto";
import {hostname} from "node:os";
import type {IPublishPacket} from "mqtt";
import type {QwenEdgeConfig} from "./config.js";
import {describeError} from "./errors.js";
import {EventBus, type ModelStateChange} from "./events.js";
import {Engine} from "./inference/engine.js";
import {Scheduler} from "./inference/scheduler.js";
import {RequestPipeline, type Job} from "./jobs/pipeline.js";
import {ConversationStore} from "./jobs/conversations.js";
import {JobStore} from "./jobs/store.js";
import type {Logger} from "./log.js";
import {bringUpModel} from "./models/bring-up.js";
import {brokerAuth, readBrokerSecrets} from "./mqtt/credentials.js";
import {FleetMembership} from "./mqtt/fleet-membership.js";
import {SessionGuard} from "./mqtt/session-guard.js";
import {rememberInstance} from "./mqtt/instances.js";
import {replyPolicy} from "./mqtt/reply-policy.js";
import {compileActions} from "./actions/action.js";
import {ActionExecutor} from "./actions/executor.js";
import {DurableOutgoingStore} from "./mqtt/outgoing-store.js";
import {MqttLink, type LinkOptions} from "./mqtt/link.js";
import type {ProtocolLimits} from "./mqtt/protocol.js";
import {topicLayout, type TopicLayout} from "./mqtt/topics.js";
import {compileRoutes} from "./routes/route.js";
import {Router} from "./routes/router.js";
import {StatusReporter, type StatusMessage} from "./telemetry/status.js";
import {Telemetry, telemetrySubscriptions} from "./telemetry/telemetry.js";
import {withTimeout} from "./util/timeout.js";

export interface DaemonDeps {
    config: QwenEdgeConfig;
    log: Logger;
    threads: number;
    /** called once the daemon is online (sd_notify READY=1) */
    onReady?: () => void;
    /** every change of the retained status (sd_notify STATUS=) */
    onStatus?: (status: StatusMessage) => void;
    /** the broker connection came up, or went down with an explained reason (sd_notify STATUS=) */
    onBroker?: (connected: boolean, problem?: string) => void;
}

/** How long an answered request id is remembered on its reply topic (a retried request is answered again). */
const DEDUPE_WINDOW_MS = 3_600_000;

export class Daemon {
    private readonly deps: DaemonDeps;
    private readonly events: EventBus;
    private layout!: TopicLayout;
    private store!: JobStore;
    private conversations!: ConversationStore;
    private link!: MqttLink;
    private engine!: Engine;
    private scheduler!: Scheduler<Job>;
    private pipeline!: RequestPipeline;
    private status!: StatusReporter;
    private telemetry!: Telemetry;
    private router!: Router;
    private outgoing!: DurableOutgoingStore;
    private fleet: FleetMembership | null = null;
    private guard!: SessionGuard;
    private guardTimer: NodeJS.Timeout | null = null;
    private modelReady = false;
    private hot = false;
    private storageOk = true;
    /** this process, in every status message: tells two daemons with one device id apart */
    private readonly instance = randomBytes(6).toString("hex");
    /** health(): finished-job count last seen, and when it last moved */
    private watchFinished = 0;
    private watchProgressAt = Date.now();
    private stopped: Promise<void> | null = null;

    public constructor(deps: DaemonDeps) {
        this.deps = deps;
        this.events = new EventBus(deps.log);
    }

    public async start(): Promise<void> {
        const {config: c, log} = this.deps;
        const events = this.events;
        this.layout = topicLayout(c.mqtt.baseTopic, c.device.id, c.mqtt.fleetGroup);
        const limits: ProtocolLimits = {
            maxPayloadBytes: c.inference.maxPayloadBytes, maxTokensCap: c.inference.maxTokensCap,
            defaultMaxTokens: c.inference.defaultMaxTokens, maxTimeoutMs: c.inference.maxTimeoutMs,
            defaultTimeoutMs: c.inference.defaultTimeoutMs, maxStopSequences: 8, maxIdLength: 128
        };
        const routes = compileRoutes(c.routes).routes;
        const policy = replyPolicy({base: c.mqtt.baseTopic, response: this.layout.response, discoveryPrefix: c.telemetry.discoveryPrefix,
            routes, allow: c.mqtt.replyTopics});
        this.router = new Router({log, routes, device: c.device.id, limits, events, replyPolicy: policy,
            maximumPacketSize: () => this.link.brokerMaximumPacketSize()});
        this.store = new JobStore({log, dir: c.state.dir, dedupeWindowMs: DEDUPE_WINDOW_MS});
        this.outgoing = new DurableOutgoingStore(c.state.dir, log);
        this.conversations = new ConversationStore({log, dir: c.state.dir, limits: {maxCount: c.conversations.maxCount,
            idleMs: c.conversations.idleMinutes * 60_000, maxTotalTokens: c.conversations.maxTotalTokens}});
        this.engine = new Engine({log, options: {
            threads: this.deps.threads, contextSize: c.inference.contextSize,
            batchSize: c.inference.batchSize, parallel: c.inference.parallel, systemPrompt: c.inference.systemPrompt, mmap: c.model.mmap,
            promptCheckpoints: c.inference.promptCheckpoints,
            sampling: {temperature: c.inference.temperature, topP: c.inference.topP, topK: c.inference.topK, presencePenalty: c.inference.presencePenalty}
        }});
        this.scheduler = new Scheduler<Job>({
            log, maxQueue: c.inference.maxQueue, parallel: c.inference.parallel,
            run: (job, signal, queuedMs) => this.pipeline.run(job, signal, queuedMs),
            expire: (job, reason) => this.pipeline.expire(job, reason),
            onChange: () => this.updateFleet()
        });
        this.scheduler.setPaused(true);
        this.guard = new SessionGuard({clientId: c.mqtt.clientId, deviceId: c.device.id, instance: this.instance,
            earlierInstances: rememberInstance(c.state.dir, this.instance, log),
            onVerdict: (reason, backoffMs) => {
                this.link.setReconnectFloor(backoffMs);
                void this.status.setCondition("session", reason);
            }});
        this.link = new MqttLink({
            log, options: this.linkOptions(),
            onMessage: (packet) => this.onMessage(packet),
            onConnect: () => {
                this.deps.onBroker?.(true);
                this.guard.onConnected();
                void this.status.republish();
                this.telemetry.onConnect();
            },
            onDisconnect: (reason, close) => {
                this.guard.onClose(close);
                this.deps.onBroker?.(false, reason);
            },
            onSubscription: (filter, problem) => this.fleet?.onSubscription(filter, problem)
        });
        if (this.layout.fleetRequest !== null) {
            this.fleet = new FleetMembership({log, link: this.link, filter: this.layout.fleetRequest,
                onProblem: (reason) => void this.status.setCondition("fleet", reason)});
        }
        this.pipeline = new RequestPipeline({log, layout: this.layout, limits, policy, link: this.link, store: this.store, scheduler: this.scheduler,
            engine: this.engine, router: this.router, events, conversations: this.conversations,
            outgoing: this.outgoing,
            actions: new ActionExecutor({log, actions: compileActions(c.actions).actions, device: c.device.id, policy: {...policy, allow: []},
                publish: (topic, payload, options) => this.link.publish(topic, payload, options)}), streamIntervalMs: c.inference.streamIntervalMs, dedupeWindowMs: DEDUPE_WINDOW_MS});
        this.status = new StatusReporter({log, topic: this.layout.status, link: this.link,
            onChange: (status) => this.deps.onStatus?.(status), identity: {instance: this.instance, host: hostname()}});
        this.telemetry = new Telemetry({log, config: c, layout: this.layout, link: this.link, status: this.status, events,
            parts: {scheduler: this.scheduler, engine: this.engine, jobs: this.store, conversations: this.conversations}, threads: this.deps.threads, limits,
            setPaused: (hot) => {
                this.hot = hot;
                this.updatePause();
            }});

        events.on("daemon", "storage", ({reason}) => {
            this.storageOk = reason === null;
            this.updateFleet();
            void this.status.setCondition("storage", reason === null ? null : `job journal: ${reason}`);
        });
        this.guardTimer = setInterval(() => this.guard.tick(), 60_000).unref();
        await this.store.start();
        try {
            this.conversations.open();
        } catch (err) {
            log.error("conversations could not be read; starting without them", describeError(err));
        }
        this.pipeline.start();
        // The journal's jobs are queued in the same tick the link starts: no live message can be taken
        // before them (the connection is made asynchronously), and a redelivered copy finds them pending.
        this.link.start();
        this.pipeline.replay(this.store.pending());
        void this.status.set("starting");
        await this.telemetry.start().catch((err: unknown) => log.error("telemetry failed to start", describeError(err)));
        await this.bringUpModel();
        this.deps.onReady?.();
    }

    /** Idempotent: stops intake, drains, publishes `offline`, disconnects. */
    public stop(): Promise<void> {
        this.stopped ??= this.shutdown();
        return this.stopped;
    }

    /**
     * Liveness for the service watchdog (sd_notify WATCHDOG=1). Every job ends by its deadline (at
     * most inference.maxTimeoutMs, aborted if need be), so busy slots with no job finishing for
     * longer than that mean generation is wedged, and only a restart frees it. A failed model load
     * is not unhealthy: the daemon stays up, degraded, answering model_unavailable.
     */
    public health(): {ok: boolean; reason?: string} {
        if (!this.scheduler) return {ok: true};
        const s = this.scheduler.stats();
        const finished = s.completed + s.expired;
        const now = Date.now();
        if (s.running === 0 || finished !== this.watchFinished) {
            this.watchFinished = finished;
            this.watchProgressAt = now;
            return {ok: true};
        }
        const stuckMs = now - this.watchProgressAt;
        const limitMs = this.deps.config.inference.maxTimeoutMs + 60_000;
        return stuckMs <= limitMs ? {ok: true} : {ok: false, reason: `${s.running} generation(s) running and none finished for ${Math.round(stuckMs / 1000)} s`};
    }

    /** The model the configuration asks for (model.path, or the plan), announced on the bus at each step. */
    private async bringUpModel(): Promise<void> {
        const {config: c, log} = this.deps;
        const model = (change: Omit<ModelStateChange, "plan"> & {plan?: ModelStateChange["plan"]}): void =>
            this.events.emit("modelState", {plan: null, ...change});
        model({state: "loading", name: "", path: "", reason: null});
        try {
            await this.engine.start();
            const loaded = await bringUpModel({config: c, log, engine: this.engine,
                onPhase: (_phase, progress) => void this.status.set("loading", {progress})});
            model({state: "ready", name: loaded.name, path: loaded.path, plan: loaded.plan, reason: loaded.fallback});
            this.modelReady = true;
            this.updatePause();
            this.updateFleet();
            if (loaded.fallback) void this.status.setCondition("model", `model fallback: ${loaded.fallback}`);
            await this.status.set("online");
        } catch (err) {
            const reason = describeError(err).message;
            log.error("model failed to load; answering model_unavailable", describeError(err));
            model({state: "failed", name: "", path: "", reason});
            await this.status.set("degraded", {reason: `model unavailable: ${reason}`});
        }
    }

    /** Work waits while the model is not ready, and while the device is too hot (telemetry.pauseWhenHot). */
    private updatePause(): void {
        this.scheduler.setPaused(this.hot || !this.modelReady);
        this.updateFleet();
    }

    /** In the fleet queue only while this device can take work (src/mqtt/fleet-membership.ts). */
    private updateFleet(): void {
        if (!this.fleet || !this.scheduler) return;
        this.fleet.update({modelReady: this.modelReady, paused: this.hot, storageOk: this.storageOk,
            queued: this.scheduler.stats().queued, maxQueue: this.deps.config.inference.maxQueue});
    }

    /** Telemetry's topics to telemetry, cancels and requests to the pipeline. Resolving sends the PUBACK. */
    private async onMessage(packet: IPublishPacket): Promise<void> {
        const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload;
        if (packet.topic === this.layout.status) return this.guard.onStatus(payload, packet.retain);
        if (this.telemetry.handles(packet.topic)) return this.telemetry.onMessage(packet.topic, payload);
        if (packet.topic === this.layout.cancel) return this.pipeline.cancel(payload);
        return this.pipeline.intake(packet);
    }

    private async shutdown(): Promise<void> {
        const {log, config} = this.deps;
        const started = Date.now();
        log.info("shutting down", {drainMs: config.shutdown.drainMs});
        if (this.guardTimer) clearInterval(this.guardTimer);
        // out of the fleet queue first, so fleet work goes to the other members while this one drains
        if (this.link.connected) await withTimeout(this.fleet?.leave() ?? Promise.resolve(), 2000, () => undefined);
        this.pipeline.close();
        this.events.off("daemon");
        const drain = await this.scheduler.stop(config.shutdown.drainMs);
        await this.engine.stop().catch((err: unknown) => log.warn("engine stop failed", describeError(err)));
        await this.telemetry.stop();
        if (this.link.connected) await withTimeout(this.status.set("offline"), 2000, () => undefined);
        await this.link.stop();
        await this.store.stop();
        log.info("stopped", {ms: Date.now() - started, ...drain, keptForNextStart: this.store.stats().pending});
    }

    private linkOptions(): LinkOptions {
        const m = this.deps.config.mqtt;
        // Files only (mqtt.passwordFile or the systemd credential), never argv or the environment.
        const secrets = readBrokerSecrets(m);
        for (const warning of secrets.warnings) this.deps.log.warn("mqtt credentials", {problem: warning});
        this.deps.log.debug("mqtt credentials", {username: m.username !== "", password: secrets.passwordSource,
            tls: {ca: secrets.ca !== undefined, clientCert: secrets.cert !== undefined}});
        // the fleet queue is joined by FleetMembership once the device can take work; its own status, for the SessionGuard
        const subscriptions: LinkOptions["subscriptions"] = [
            {filter: this.layout.request, qos: 1},
            {filter: this.layout.cancel, qos: 1},
            {filter: this.layout.status, qos: 1}
        ];
        subscriptions.push(...telemetrySubscriptions(this.deps.config), ...this.router.subscriptions());
        return {
            url: m.url, clientId: m.clientId, keepaliveSeconds: m.keepaliveSeconds, sessionExpirySeconds: m.sessionExpirySeconds,
            connectTimeoutMs: m.connectTimeoutMs, reconnectMinMs: m.reconnectMinMs, reconnectMaxMs: m.reconnectMaxMs,
            will: {topic: this.layout.status, payload: JSON.stringify({state: "offline", since: new Date().toISOString(), reason: "connection lost"})},
            subscriptions, maxPayloadBytes: this.deps.config.inference.maxPayloadBytes, outgoingStore: this.outgoing,
            ...brokerAuth(m.username, secrets)
        };
    }
}
