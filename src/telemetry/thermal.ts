/**
 * Thermal care. Above `maxTemperatureC`, or while the firmware throttles right now, the device is
 * `degraded` with the reason; with `pauseWhenHot` new work waits in the queue (running generations
 * finish) until it cools. Hysteresis: "hot" ends only at `maxTemperatureC − coolDownC` with no
 * throttling, so a device hovering at the limit does not flap between states on every snapshot.
 */
import {describeFlags, type ThrottleState} from "../system/throttle.js";

export interface ThermalReading {
    temperatureC: number | null;
    throttling: ThrottleState | null;
}

export interface ThermalGuardDeps {
    maxTemperatureC: number;
    coolDownC: number;
    pauseWhenHot: boolean;
    /** raises (reason) or clears (null) the "thermal" status condition */
    setCondition: (reason: string | null) => void;
    /** pauses or resumes new work */
    setPaused: (paused: boolean) => void;
    onChange?: (hot: boolean, reason: string | null) => void;
}

export class ThermalGuard {
    private readonly deps: ThermalGuardDeps;
    private hot = false;
    private reason: string | null = null;

    public constructor(deps: ThermalGuardDeps) {
        this.deps = deps;
    }

    public get state(): {hot: boolean; reason: string | null; pausing: boolean} {
        return {hot: this.hot, reason: this.reason, pausing: this.hot && this.deps.pauseWhenHot};
    }

    /** Feeds one reading; re-asserts the pause while hot (someone may have resumed the queue meanwhile). */
    public update(reading: ThermalReading): void {
        const {maxTemperatureC, coolDownC} = this.deps;
        const t = reading.temperatureC;
        const throttledNow = reading.throttling?.now.any === true ? describeFlags(reading.throttling.now) : [];
        const overLimit = t !== null && t >= maxTemperatureC;
        const cooled = (t === null || t <= maxTemperatureC - coolDownC) && throttledNow.length === 0;
        const wasHot = this.hot;
        if (overLimit || throttledNow.length > 0) this.hot = true;
        else if (cooled) this.hot = false;

        // Reasons name the limit, not the reading: the status must not change with every tenth of a degree.
        const reasons: string[] = [];
        if (overLimit) reasons.push(`temperature at or above ${maxTemperatureC} °C`);
        if (throttledNow.length > 0) reasons.push(`firmware reports ${throttledNow.join(", ")}`);
        const reason = this.hot ? (reasons.length > 0 ? reasons.join("; ") : `cooling down to ${maxTemperatureC - coolDownC} °C`) : null;

        if (reason !== this.reason) {
            this.reason = reason;
            this.deps.setCondition(reason);
        }
        if (this.deps.pauseWhenHot && (this.hot || wasHot)) this.deps.setPaused(this.hot);
        if (wasHot !== this.hot) this.deps.onChange?.(this.hot, reason);
    }
}
