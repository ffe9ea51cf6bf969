/** One sample of a sync pipeline's lag, as the dashboard charts it. */
export interface LagPoint {
  /** Epoch ms. */
  t: number;
  lagBytes: number | null;
  lagSeconds: number | null;
  rowsApplied: number;
}

/**
 * The recent lag of every sync pipeline (service + direction), kept in memory by the dashboard
 * process: the sync engine stores only the current position, so a chart over time needs
 * someone to remember the samples. Bounded per pipeline (oldest dropped). Pure.
 */
export class LagHistory {
  readonly #points = new Map<string, LagPoint[]>();

  constructor(readonly capacity = 300) {}

  add(pipeline: string, point: LagPoint): void {
    let list = this.#points.get(pipeline);
    if (!list) this.#points.set(pipeline, (list = []));
    list.push(point);
    if (list.length > this.capacity) list.splice(0, list.length - this.capacity);
  }

  get(pipeline: string): LagPoint[] {
    return [...(this.#points.get(pipeline) ?? [])];
  }
}
