/**
 * Logging: one line per event, as JSON (`log.format: json`: for journald, log shippers and tests) or
 * readable (`pretty`: local time, level, message, then the fields); `auto` is pretty on a terminal and
 * JSON otherwise (under systemd stdout is the journal, not a terminal). Callers log ids, sizes and
 * durations; prompt and completion text and secrets never go in (this module cannot know, so the
 * rule is on callers).
 */
import winston from "winston";
import {DEBUG_STACK} from "./errors.js";

export type LogFormat = "pretty" | "json" | "auto";
export const LOG_FORMATS: readonly LogFormat[] = ["pretty", "json", "auto"];

type LogMethod = (message: string, meta?: object) => void;

export interface Logger {
    error: LogMethod;
    warn: LogMethod;
    info: LogMethod;
    debug: LogMethod;
    child(meta: Record<string, unknown>): Logger;
}

type Stream = NodeJS.WritableStream & {isTTY?: boolean};

/** JSON lines unless `format` says otherwise; `auto` looks at whether `stream` is a terminal. */
export function createLogger(level: string, stream: Stream = process.stdout, format: LogFormat = "json"): Logger {
    const pretty = format === "pretty" || (format === "auto" && stream.isTTY === true);
    const color = pretty && stream.isTTY === true && (process.env.NO_COLOR ?? "") === "";
    const logger = winston.createLogger({
        level,
        format: winston.format.combine(winston.format.timestamp(),
            pretty ? winston.format.printf((info) => renderPretty(info, color)) : winston.format.json()),
        transports: [new winston.transports.Stream({stream})]
    });
    return new LineLogger(logger, level === "debug");
}

/** A logger that prints nothing: the CLI's commands without --verbose. */
export function silentLogger(): Logger {
    const none = (): void => undefined;
    const log: Logger = {error: none, warn: none, info: none, debug: none, child: () => log};
    return log;
}

class LineLogger implements Logger {
    public constructor(private readonly w: winston.Logger, private readonly debugOn: boolean) {}

    public error(message: string, meta?: object): void { this.w.error(message, this.fields(meta)); }
    public warn(message: string, meta?: object): void { this.w.warn(message, this.fields(meta)); }
    public info(message: string, meta?: object): void { this.w.info(message, this.fields(meta)); }
    public debug(message: string, meta?: object): void { this.w.debug(message, this.fields(meta)); }

    public child(meta: Record<string, unknown>): Logger {
        return new LineLogger(this.w.child(meta), this.debugOn);
    }

    /**
     * winston appends a `message` field to the line's message ("model failed to load cannot download
     * ..."): it goes under `error` instead. The stack of an expected error (describeError) is shown at
     * debug level only; an unexpected error's stack is always kept.
     */
    private fields(meta: object | undefined): Record<string, unknown> {
        if (meta === undefined) return {};
        const out: Record<string, unknown> = {...meta};
        const stack = (meta as {[DEBUG_STACK]?: unknown})[DEBUG_STACK];
        delete (out as {[DEBUG_STACK]?: unknown})[DEBUG_STACK];
        if ("message" in out) {
            out[out.error === undefined ? "error" : "detail"] = out.message;
            delete out.message;
        }
        if (this.debugOn && typeof stack === "string") out.stack = stack;
        return out;
    }
}

const LEVEL_COLORS: Record<string, string> = {error: "\x1b[31m", warn: "\x1b[33m", info: "\x1b[36m", debug: "\x1b[90m"};
/** Nested values longer than this are cut in pretty lines (the JSON format keeps everything). */
const MAX_NESTED_CHARS = 160;

/** One readable line: `14:32:14.731 info  model loaded  modelPath=/m/x.gguf ms=89`; a stack follows, indented. */
export function renderPretty(info: Record<string, unknown>, color = false): string {
    const {level, message, timestamp, stack, ...fields} = info;
    const at = typeof timestamp === "string" ? new Date(timestamp) : new Date();
    const time = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}.${String(at.getMilliseconds()).padStart(3, "0")}`;
    const name = String(level);
    const shown = color ? `${LEVEL_COLORS[name] ?? ""}${name.padEnd(5)}\x1b[0m` : name.padEnd(5);
    const text = String(message);
    // A field the message already spells out (a topic, a device id) is not repeated.
    const rest = Object.entries(fields).filter(([, value]) => !(typeof value === "string" && value.length > 2 && text.includes(value)))
        .map(([key, value]) => `${key}=${prettyValue(value)}`).join(" ");
    const line = `${time} ${shown} ${text}${rest === "" ? "" : `  ${rest}`}`;
    return typeof stack === "string" ? `${line}\n${stack.split("\n").map((l) => `    ${l.trim()}`).join("\n")}` : line;
}

function prettyValue(value: unknown): string {
    if (typeof value === "string") return /^[\w.,:/@+%-]+$/.test(value) ? value : JSON.stringify(value);
    if (typeof value !== "object" || value === null) return String(value);
    const text = JSON.stringify(value);
    return text.length > MAX_NESTED_CHARS ? `${text.slice(0, MAX_NESTED_CHARS - 1)}…` : text;
}

function pad(n: number): string {
    return String(n).padStart(2, "0");
}
