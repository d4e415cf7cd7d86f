/**
 * Telemetry, composed: health snapshots on a timer, the retained info, thermal and memory
 * conditions on the status, Home Assistant discovery and the Prometheus port. What happens (a
 * generation done, an error answered, the model's state, a route's counters) arrives as events on the
 * daemon's bus; live gauges (queue, sequences, journal) are read from the parts themselves. The daemon
 * starts it after the MQTT link and stops it before publishing `offline`. A failing piece is logged,
 * never fatal: telemetry must not stop inference.
 */
import {statSync} from "node:fs";
import os from "node:os";
import {basename, dirname} from "node:path";
import type {IClientPublishOptions} from "mqtt";
import type {QwenEdgeConfig} from "../config.js";
import {shortReason} from "../errors.js";
import {modelName} from "../models/catalog.js";
import type {ModelPlan} from "../models/planner.js";
import type {EventBus, ModelStateChange} from "../events.js";
import type {EngineStats} from "../inference/engine.js";
import type {SchedulerStats} from "../inference/scheduler.js";
import type {Logger} from "../log.js";
import type {LinkStats} from "../mqtt/link.js";
import {requestJsonSchema, type ProtocolLimits} from "../mqtt/protocol.js";
import {topicLayout, type TopicLayout} from "../mqtt/topics.js";
import {probeDevice, readTemperatureC, type DeviceFacts} from "../system/probe.js";
import {ThrottleReader} from "../system/throttle.js";
import {nodeLlamaCppVersion, packageHomepage, packageVersion} from "../version.js";
import {HealthMonitor, HostSampler, memoryBudget, type HealthMessage, type HostSample} from "./health.js";
import {discoveryPayload, DiscoveryPublisher, homeAssistantStatusTopic} from "./homeassistant.js";
import {zeroCounters, type RouteCounters} from "../routes/router.js";
import {InferenceStats} from "./inference-stats.js";
import {buildInfo, InfoPublisher, type InfoVersions} from "./info.js";
import {MetricsServer, renderMetrics} from "./metrics.js";
import {readProcessFigures} from "./process-figures.js";
import type {StatusReporter} from "./status.js";
import {ThermalGuard} from "./thermal.js";

export interface TelemetryLink {
    readonly connected: boolean;
    publish(topic: string, payload: string | Buffer, options?: IClientPublishOptions): Promise<void>;
    publishIfConnected(topic: string, payload: string, options?: IClientPublishOptions): void;
    stats(): LinkStats;
}

/** The parts whose live gauges telemetry reads at each snapshot. */
export interface TelemetryParts {
    scheduler: {stats(): SchedulerStats};
    engine: {stats(): EngineStats};
    /** the job journal: accepted requests not yet answered, and records found damaged at start */
    jobs: {stats(): {pending: number; damagedAtStart: number}};
    conversations: {stats(): HealthMessage["conversations"]};
}

export interface TelemetryDeps {
    log: Logger;
    config: QwenEdgeConfig;
    layout: TopicLayout;
    link: TelemetryLink;
    status: StatusReporter;
    events: EventBus;
    parts: TelemetryParts;
    threads: number;
    limits: ProtocolLimits;
    /** pauses or resumes new work when the device is too hot (the daemon adds its own reasons) */
    setPaused: (paused: boolean) => void;
    /** test seams: a recorded /proc + /sys tree, and `vcgencmd get_throttled` */
    root?: string;
    runVcgencmd?: () => Promise<string>;
}

/** Topics telemetry needs subscribed: health refresh requests, and Home Assistant's birth messages when discovery is on. */
export function telemetrySubscriptions(config: QwenEdgeConfig): Array<{filter: string; qos: 0 | 1}> {
    const layout = topicLayout(config.mqtt.baseTopic, config.device.id, config.mqtt.fleetGroup);
    return [{filter: layout.healthRefresh, qos: 0}, {filter: layout.fleetHealthRefresh, qos: 0},
        ...(config.telemetry.homeAssistant ? [{filter: homeAssistantStatusTopic(config.telemetry.discoveryPrefix), qos: 1 as const}] : [])];
}

/** On-demand health snapshots (`qwen-edge status`) at most this often, however many are asked for. */
const REFRESH_MIN_INTERVAL_MS = 1000;

export class Telemetry {
    public readonly inference: InferenceStats;
    private readonly deps: TelemetryDeps;
    private facts: DeviceFacts | null = null;
    private modelSizeFor: {path: string; bytes: number | null} | null = null;
    private sampler: HostSampler | null = null;
    private monitor: HealthMonitor | null = null;
    private info: InfoPublisher | null = null;
    private discovery: DiscoveryPublisher | null = null;
    private thermal: ThermalGuard | null = null;
    private metrics: MetricsServer | null = null;
    private lastHealth: HealthMessage | null = null;
    private lowMemory = false;
    /** read once: version lookups read package.json synchronously */
    private versions: InfoVersions = {qwenEdge: "unknown", nodeLlamaCpp: "unknown", node: process.version};
    private requestSchema: object = {};
    private unsubscribeStatus: (() => void) | null = null;
    private lastRefreshAt = 0;
    /** the model as its last modelState event said */
    private model: ModelStateChange = {state: "loading", name: "", path: "", plan: null, reason: null};
    /** each route's counters as its last routeOutcome event said */
    private readonly routes = new Map<string, RouteCounters>();
    private repliesDropped = 0;

    public constructor(deps: TelemetryDeps) {
        this.deps = deps;
        // Tokens per second over at least two health intervals, so every finished request shows in a snapshot.
        this.inference = new InferenceStats({rateWindowMs: Math.max(60, 2 * this.intervalSeconds) * 1000});
    }

    public get intervalSeconds(): number {
        return Math.max(1, this.deps.config.telemetry.intervalSeconds);
    }

    /** The latest health snapshot (null before the first). */
    public get health(): HealthMessage | null {
        return this.lastHealth;
    }

    /** Probes the device once, then starts the timer and (when configured) the metrics port. */
    public async start(): Promise<{metricsPort: number | null}> {
        const {config, log, layout} = this.deps;
        const t = config.telemetry;
        const root = this.deps.root ?? "/";
        const started = Date.now();
        this.listen();
        this.versions = {qwenEdge: packageVersion(), nodeLlamaCpp: nodeLlamaCppVersion(), node: process.version};
        this.requestSchema = requestJsonSchema(this.deps.limits);
        this.facts = await probeDevice({root}).catch((err: unknown) => {
            log.warn("device probe failed; telemetry reports what it can", {message: (err as Error).message});
            return null;
        });
        const throttle = new ThrottleReader({root, commandIntervalMs: Math.max(1, t.throttleCommandIntervalSeconds) * 1000,
            ...(this.deps.runVcgencmd ? {runVcgencmd: this.deps.runVcgencmd} : {})});
        const throttleSource = await throttle.detect();
        this.sampler = new HostSampler({root, diskPaths: [config.model.dir, config.model.path !== "" ? dirname(config.model.path) : ""].filter((d) => d !== ""),
            facts: this.facts ?? fallbackFacts(), throttle});
        this.thermal = new ThermalGuard({
            maxTemperatureC: t.maxTemperatureC, coolDownC: t.coolDownC, pauseWhenHot: t.pauseWhenHot,
            setCondition: (reason) => void this.deps.status.setCondition("thermal", reason),
            setPaused: (paused) => this.deps.setPaused(paused),
            onChange: (hot, reason) => log.warn(hot ? "device hot" : "device cooled", {reason, pausing: hot && t.pauseWhenHot})
        });
        const publishRetained = (topic: string, payload: string): Promise<void> => this.deps.link.publish(topic, payload, {qos: 1, retain: true});
        this.info = new InfoPublisher({
            topic: layout.info, build: () => this.buildInfo(), publish: publishRetained, connected: () => this.deps.link.connected,
            onError: (err) => log.warn("info publish failed", {message: err.message})
        });
        if (t.homeAssistant) {
            // A host without a readable thermal zone at start gets no Temperature entity at all.
            const temperature = await readTemperatureC(root) !== null;
            const supportUrl = packageHomepage();
            this.discovery = new DiscoveryPublisher({
                topic: layout.discovery(t.discoveryPrefix), publish: publishRetained, connected: () => this.deps.link.connected,
                payload: () => discoveryPayload({
                    device: layout.device, prefix: t.discoveryPrefix, topics: {status: layout.status, info: layout.info, health: layout.health},
                    version: this.versions.qwenEdge, model: this.facts?.board.model ?? this.facts?.cpu.model ?? null,
                    manufacturer: this.facts?.board.vendor ?? null, temperature, supportUrl, intervalSeconds: this.intervalSeconds
                }),
                onError: (err) => log.warn("home assistant discovery publish failed", {message: err.message})
            });
        }
        let metricsPort: number | null = null;
        if (t.metricsPort > 0) {
            this.metrics = new MetricsServer({host: t.metricsHost, port: t.metricsPort, render: () => this.renderMetrics(),
                onError: (err) => log.error("metrics port failed", {host: t.metricsHost, port: t.metricsPort, message: err.message})});
            metricsPort = await this.metrics.start();
        }
        // The model's state is in the info: a status change (loading -> online) is when it changes.
        this.unsubscribeStatus = this.deps.status.addListener(() => void this.info?.refresh(false));
        this.monitor = new HealthMonitor({intervalMs: this.intervalSeconds * 1000, tick: () => this.tick()});
        this.monitor.start();
        log.info("telemetry started", {ms: Date.now() - started, intervalSeconds: this.intervalSeconds, throttleSource,
            homeAssistant: t.homeAssistant, metricsPort, board: this.facts?.board.model ?? null});
        void this.info.refresh(true);
        void this.discovery?.announce(true);
        return {metricsPort};
    }

    public async stop(): Promise<void> {
        this.deps.events.off("telemetry");
        this.unsubscribeStatus?.();
        await this.monitor?.stop();
        await this.metrics?.stop();
    }

    /** After every (re)connect: the broker may have lost retained messages. */
    public onConnect(): void {
        void this.info?.refresh(true);
        void this.discovery?.announce(true);
        this.monitor?.now();
    }

    /** True for messages telemetry consumes (Home Assistant's birth message); the daemon hands them over. */
    public handles(topic: string): boolean {
        const t = this.deps.config.telemetry;
        return this.isRefresh(topic) || (t.homeAssistant && topic === homeAssistantStatusTopic(t.discoveryPrefix));
    }

    /**
     * Resolves at once: the daemon acks the message when this resolves, and MQTT.js handles incoming
     * packets one at a time, so awaiting our own QoS 1 publish here would wait for a PUBACK that
     * cannot be read until we return (a deadlock that stalls every request behind it).
     */
    public async onMessage(topic: string, payload: Buffer): Promise<void> {
        if (!this.handles(topic)) return;
        if (this.isRefresh(topic)) {
            const now = Date.now();
            if (now - this.lastRefreshAt < REFRESH_MIN_INTERVAL_MS) return;
            this.lastRefreshAt = now;
            this.deps.log.debug("health snapshot asked for", {topic});
            this.monitor?.now();
            return;
        }
        this.deps.log.info("home assistant status", {payload: payload.toString("utf8").slice(0, 16)});
        void this.discovery?.onHomeAssistantStatus(payload);
    }

    private isRefresh(topic: string): boolean {
        return topic === this.deps.layout.healthRefresh || topic === this.deps.layout.fleetHealthRefresh;
    }

    private listen(): void {
        const {events} = this.deps;
        events.on("telemetry", "generationDone", (g) => this.inference.recordGeneration(g));
        events.on("telemetry", "requestError", (e) => this.inference.recordError(e.code));
        events.on("telemetry", "modelState", (m) => {
            this.model = m;
            void this.info?.refresh(false);
        });
        events.on("telemetry", "routeOutcome", (r) => this.routes.set(r.route, r.counters));
        events.on("telemetry", "replyDropped", () => this.repliesDropped++);
    }

    private jobFigures(): HealthMessage["jobs"] {
        const j = this.deps.parts.jobs.stats();
        return {pending: j.pending, damagedAtStart: j.damagedAtStart, repliesDropped: this.repliesDropped};
    }

    /** Every configured route's counters (zero until its first message). */
    private routeCounters(): Record<string, RouteCounters> {
        return Object.fromEntries([...this.deps.config.routes.map((r): [string, RouteCounters] => [r.name, this.routes.get(r.name) ?? zeroCounters()])]);
    }

    /** One snapshot: collect, publish, then feed the conditions. Never rejects. */
    private async tick(): Promise<void> {
        const t = this.deps.config.telemetry;
        try {
            const started = performance.now();
            const host = await this.sampler!.sample();
            const message = this.composeHealth(host, performance.now() - started);
            this.lastHealth = message;
            const expiry = this.intervalSeconds * 2;
            this.deps.link.publishIfConnected(this.deps.layout.health, JSON.stringify(message),
                {qos: 0, retain: t.retainHealth, properties: {messageExpiryInterval: expiry}});
            this.thermal?.update(host.cpu);
            this.updateLowMemory(message);
            // not awaited: a QoS 1 publish during a broker outage would hold the next snapshot (and stop())
            void this.info?.refresh(false);
        } catch (err) {
            this.deps.log.warn("health snapshot failed", {message: (err as Error).message});
        }
    }

    private composeHealth(host: HostSample, collectMs: number): HealthMessage {
        const s = this.deps.parts.scheduler.stats();
        const link = this.deps.link.stats();
        const {promptSeconds: _p, generationSeconds: _g, ...figures} = this.inference.figures();
        return {
            device: this.deps.layout.device,
            at: new Date().toISOString(),
            uptimeSeconds: Math.round(process.uptime()),
            intervalSeconds: this.intervalSeconds,
            state: this.deps.status.status.state,
            memory: {...host.memory, budgetBytes: memoryBudget(host.memory, this.deps.config.model.reserveBytes)},
            cpu: host.cpu,
            disk: host.disk,
            inference: {model: this.model.name, modelState: this.model.state, queued: s.queued, running: s.running, paused: s.paused, ...figures,
                promptCache: this.deps.parts.engine.stats().promptCache},
            mqtt: {connected: link.connected, reconnects: link.reconnects, lastConnectAt: link.lastConnectAt},
            jobs: this.jobFigures(),
            routes: this.routeCounters(),
            conversations: this.deps.parts.conversations.stats(),
            collectMs: Math.round(collectMs * 100) / 100
        };
    }

    /** Degraded while the headroom is under the threshold; clears at 125 % of it, so it does not flap. */
    private updateLowMemory(h: HealthMessage): void {
        const threshold = this.deps.config.telemetry.lowMemoryBytes;
        if (threshold <= 0) return;
        const headroom = Math.min(h.memory.availableBytes, h.memory.cgroupHeadroomBytes ?? Infinity);
        const low = headroom < threshold || (this.lowMemory && headroom < threshold * 1.25);
        if (low === this.lowMemory) return;
        this.lowMemory = low;
        this.deps.log.warn(low ? "memory low" : "memory recovered", {headroomBytes: headroom, thresholdBytes: threshold});
        void this.deps.status.setCondition("memory", low ? `memory headroom below ${Math.round(threshold / 1048576)} MiB` : null);
    }

    /** The served file's size, read once per file (the model is chosen after telemetry starts). */
    private modelSize(): number | null {
        const path = this.model.path;
        if (path === "") return null;
        if (this.modelSizeFor?.path !== path) {
            let bytes: number | null = null;
            try {
                bytes = statSync(path).size;
            } catch {
                bytes = null;
            }
            this.modelSizeFor = {path, bytes};
        }
        return this.modelSizeFor.bytes;
    }

    private buildInfo(): ReturnType<typeof buildInfo> {
        const {config: c, layout, limits} = this.deps;
        const engine = this.deps.parts.engine.stats();
        const m = this.model;
        return buildInfo({
            device: layout.device, versions: this.versions, facts: this.facts,
            model: {name: m.name, file: basename(m.path), sizeBytes: this.modelSize(), state: m.state,
                threads: this.deps.threads, decision: m.plan, reason: modelReason(m.plan, m.path, m.name)},
            limits: {maxQueue: c.inference.maxQueue, parallel: c.inference.parallel, contextSize: engine.contextSize,
                maxPayloadBytes: limits.maxPayloadBytes, maxTokensCap: limits.maxTokensCap, defaultMaxTokens: limits.defaultMaxTokens,
                maxTimeoutMs: limits.maxTimeoutMs, defaultTimeoutMs: limits.defaultTimeoutMs, maxStopSequences: limits.maxStopSequences,
                maxIdLength: limits.maxIdLength},
            topics: {request: layout.request, cancel: layout.cancel, response: layout.response, status: layout.status, health: layout.health,
                fleet: layout.fleetRequest === null ? null : `${layout.base}/fleet/request`},
            telemetry: {intervalSeconds: this.intervalSeconds, healthExpirySeconds: this.intervalSeconds * 2},
            requestSchema: this.requestSchema
        });
    }

    private renderMetrics(): string {
        const s = this.deps.parts.scheduler.stats();
        const link = this.deps.link.stats();
        return renderMetrics({
            device: this.deps.layout.device, version: this.versions.qwenEdge, nodeLlamaCppVersion: this.versions.nodeLlamaCpp, model: this.model.name,
            state: this.deps.status.status.state, inference: this.inference.figures(), queued: s.queued, running: s.running, paused: s.paused,
            parallel: this.deps.config.inference.parallel, mqtt: {connected: link.connected, reconnects: link.reconnects}, health: this.lastHealth,
            rates: this.inference.recentRates(), process: readProcessFigures(), routes: this.routeCounters(), jobs: this.jobFigures()
        });
    }
}

/** Why this model, in one line: the planner's reason, or the configured path. */
function modelReason(decision: unknown, modelPath: string, running: string): string | null {
    const plan = decision as Pick<ModelPlan, "reason" | "choice"> | null;
    if (typeof plan?.reason !== "string") return modelPath !== "" && decision === null ? "given by model.path" : null;
    const planned = plan.choice ? modelName(plan.choice.variant, plan.choice.quant) : running;
    return shortReason(planned === running || running === "" ? plan.reason
        : `${running} runs instead of the planned ${planned} (the status says why); the plan: ${plan.reason}`);
}

/** What the telemetry reports when the probe failed: Node's own view of the machine. */
function fallbackFacts(): DeviceFacts {
    return {
        memory: {totalBytes: os.totalmem(), availableBytes: os.freemem(), freeBytes: os.freemem(), swapTotalBytes: 0, swapFreeBytes: 0,
            cgroup: {version: null, limitBytes: null, usageBytes: null, inactiveFileBytes: null, headroomBytes: null}, constrainedBytes: null},
        cpu: {logical: os.cpus().length, available: os.availableParallelism(), quota: null, physicalCores: null, model: null},
        board: {arch: process.arch, simd: [], model: null, vendor: null, isRaspberryPi: false}
    };
}
