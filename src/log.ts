/**
 * Logging: JSON lines on stdout, one object per event. Callers log ids, sizes and durations; prompt
 * and completion text and secrets never go in (this module cannot know, so the rule is on callers).
 */
import winston from "winston";

export type Logger = Pick<winston.Logger, "error" | "warn" | "info" | "debug"> & {child(meta: Record<string, unknown>): Logger};

export function createLogger(level: string, stream: NodeJS.WritableStream = process.stdout): Logger {
    return winston.createLogger({
        level,
        format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
        transports: [new winston.transports.Stream({stream})]
    });
}
