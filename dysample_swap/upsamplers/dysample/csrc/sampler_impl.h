/* One scalar type's DySample sampler; sampler.c includes this with T and SUFFIX defined.
 *
 * Shapes: x (N, G*Cg, H, W), offset (N, 2*G*s*s, H, W), out (N, G*Cg, Ho, Wo), all contiguous.
 * Tables (length Ho for rows, Wo for columns):
 *   off_row[oy] / off_col[ox]: where output pixel (oy, ox) finds its offset inside one channel group's
 *     x-offset block: i*s*H*W + h*W for the row's sub-pixel cell (h, i), j*H*W + w for the column's.
 *   anchor_row / anchor_col: MODE_EXACT: the anchor's input index; MODE_GRID: unused.
 *   frac_row / frac_col: MODE_EXACT: the anchor's fraction; MODE_GRID: the anchor position with
 *     pixel centres at k + 0.5 (what the authors add the offset to before normalising).
 *   cell_start[r] .. cell_start[r + 1]: the output rows whose offsets come from row cell r (s*H cells).
 * Both entry points return 0 (done; at once for an empty output), 1 (a row buffer could not be allocated)
 * or 2 (an input with no pixels, H*W == 0, for a nonempty output: nothing to read, nothing written).
 * Any finite or non-finite offset reads inside the input (NaN as position 0, +-inf at the border).
 */
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)
#define TAP CAT(tap, SUFFIX)

typedef struct {
    int64_t i00, i01, i10, i11; /* flat input pixels of the four taps */
    T w00, w01, w10, w11;       /* their bilinear weights */
    T fx, fy;                   /* fractions along x and y */
    T dx, dy;                   /* d(position)/d(offset): 0 where the border clamp holds */
} TAP;

/* One axis: position -> lower tap index, upper tap index, fraction, derivative. */
static inline void FN(axis)(int mode, T offset, int64_t anchor, T frac, int64_t len, int64_t *i0, int64_t *i1,
                            T *f, T *d) {
    if (mode == MODE_EXACT) {
        T shifted = frac + offset;
        T whole = FLOOR(shifted);
        T bound = (T)(2 * len + 2);
        /* far outside clamps anyway; NaN goes to -bound (clamped to pixel 0, as the reference does) */
        whole = whole > -bound ? whole : -bound;
        whole = whole < bound ? whole : bound;
        int64_t index = anchor + (int64_t)whole;
        if (index >= 0 && index < len - 1) {
            *i0 = index;
            *i1 = index + 1;
            *f = shifted - whole;
            *d = (T)1;
        } else {
            index = index < 0 ? 0 : (index > len - 1 ? len - 1 : index);
            *i0 = index;
            *i1 = index + 1 < len ? index + 1 : len - 1;
            *f = (T)0;
            *d = (T)0;
        }
        return;
    }
    /* MODE_GRID: the authors' 2 * p / size - 1, then grid_sample (align_corners=False, border) */
    T g = (offset + frac) * (T)2 / (T)len - (T)1;
    T source = FMA(g + (T)1, (T)len / (T)2, (T)-0.5); /* as PyTorch's AVX2 kernels compute it (fused) */
    T lo = source > (T)0 ? source : (T)0;
    T max_val = (T)(len - 1);
    T clipped = lo < max_val ? lo : max_val;
    int inside = (lo != (T)0) && (clipped != max_val); /* grid_sample: borders count as outside */
    T whole = FLOOR(clipped);
    int64_t index = (int64_t)whole;
    *i0 = index;
    *i1 = index + 1 < len ? index + 1 : len - 1;
    *f = clipped - whole;
    /* grid_sample's gradient (len/2 on its normalised grid), then the chain of the normalisation */
    *d = inside ? (T)len / (T)2 : (T)0;
}

/* The taps of output row oy of channel group g of batch item n. */
static void FN(row_taps)(int mode, const T *offset_x, const T *offset_y, int64_t row_offset, const int64_t *off_col,
                         int64_t anchor_y, T frac_y, const int64_t *anchor_col, const T *frac_col, int64_t h,
                         int64_t w, int64_t wo, TAP *taps) {
    for (int64_t ox = 0; ox < wo; ++ox) {
        int64_t at = row_offset + off_col[ox];
        int64_t x0, x1, y0, y1;
        T fx, fy, dx, dy;
        FN(axis)(mode, offset_x[at], anchor_col[ox], frac_col[ox], w, &x0, &x1, &fx, &dx);
        FN(axis)(mode, offset_y[at], anchor_y, frac_y, h, &y0, &y1, &fy, &dy);
        TAP *t = taps + ox;
        T gx = (T)1 - fx, gy = (T)1 - fy;
        t->i00 = y0 * w + x0;
        t->i01 = y0 * w + x1;
        t->i10 = y1 * w + x0;
        t->i11 = y1 * w + x1;
        t->w00 = gy * gx;
        t->w01 = gy * fx;
        t->w10 = fy * gx;
        t->w11 = fy * fx;
        t->fx = fx;
        t->fy = fy;
        t->dx = dx;
        t->dy = dy;
    }
}

/* One output value; each mode rounds as its reference does (the gathers' sum, grid_sample's fused sum). */
static inline T FN(interpolate)(int mode, const T *plane, const TAP *t) {
    if (mode == MODE_EXACT)
        return plane[t->i00] * t->w00 + plane[t->i01] * t->w01 + plane[t->i10] * t->w10 + plane[t->i11] * t->w11;
    return FMA(plane[t->i11], t->w11, FMA(plane[t->i10], t->w10, FMA(plane[t->i01], t->w01, plane[t->i00] * t->w00)));
}

/* One output row over `count` consecutive channels (each tap row is loaded once for all of them). */
static inline void FN(forward_row)(int mode, const TAP *taps, int64_t wo, int count, const T *plane, int64_t hw,
                                   T *row, int64_t howo) {
    for (int64_t ox = 0; ox < wo; ++ox) {
        const TAP *t = taps + ox;
#pragma GCC unroll 4
        for (int k = 0; k < count; ++k) row[k * howo + ox] = FN(interpolate)(mode, plane + k * hw, t);
    }
}

int FN(dysample_forward)(const T *x, const T *offset, T *out, const int64_t *off_row, const int64_t *off_col,
                         const int64_t *anchor_row, const T *frac_row, const int64_t *anchor_col, const T *frac_col,
                         int64_t n, int64_t groups, int64_t cg, int64_t h, int64_t w, int64_t ho, int64_t wo,
                         int64_t s, int mode, int threads) {
    const int64_t hw = h * w, howo = ho * wo, block = s * s * hw;
    const int64_t tasks = n * groups * ho;
    int failed = 0;
    if (tasks == 0 || cg == 0 || wo == 0) return 0; /* an empty output: nothing to write */
    if (hw == 0) return 2;                          /* output pixels with no input pixel to read */
#pragma omp parallel num_threads(threads)
    {
        TAP *taps = (TAP *)malloc(sizeof(TAP) * (size_t)wo);
        if (taps == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; ++task) {
            if (taps == NULL) continue;
            const int64_t oy = task % ho, slice = task / ho, b = slice / groups, g = slice % groups;
            const T *offset_x = offset + b * 2 * groups * block + g * block;
            const T *offset_y = offset_x + groups * block;
            FN(row_taps)(mode, offset_x, offset_y, off_row[oy], off_col, anchor_row[oy], frac_row[oy], anchor_col,
                         frac_col, h, w, wo, taps);
            const T *plane = x + slice * cg * hw;
            T *row = out + slice * cg * howo + oy * wo;
            for (int64_t c = 0; c < cg; c += CHANNEL_BLOCK, plane += CHANNEL_BLOCK * hw, row += CHANNEL_BLOCK * howo) {
                if (cg - c >= CHANNEL_BLOCK)
                    FN(forward_row)(mode, taps, wo, CHANNEL_BLOCK, plane, hw, row, howo);
                else
                    FN(forward_row)(mode, taps, wo, (int)(cg - c), plane, hw, row, howo);
            }
        }
        free(taps);
    }
    return failed;
}

/* One output row's backward over `count` consecutive channels, interleaved: the scatter-adds of one
 * channel into neighbouring input pixels form a store-to-load chain, and the channels' chains are
 * independent, so the processor overlaps them. acc_x / acc_y (NULL: no offset gradient) take the
 * channels in ascending order, as grid_sample's backward sums them. */
static inline void FN(backward_row)(const TAP *taps, int64_t wo, int count, const T *plane, int64_t hw,
                                    const T *grad_row, int64_t howo, T *grad_plane, T *acc_x, T *acc_y) {
    for (int64_t ox = 0; ox < wo; ++ox) {
        const TAP *t = taps + ox;
#pragma GCC unroll 4
        for (int k = 0; k < count; ++k) {
            const T go = grad_row[k * howo + ox];
            if (grad_plane != NULL) {
                T *gp = grad_plane + k * hw;
                gp[t->i00] += t->w00 * go;
                gp[t->i01] += t->w01 * go;
                gp[t->i10] += t->w10 * go;
                gp[t->i11] += t->w11 * go;
            }
            if (acc_x != NULL) {
                const T *p = plane + k * hw;
                const T v00 = p[t->i00], v01 = p[t->i01], v10 = p[t->i10], v11 = p[t->i11];
                acc_x[ox] = FMA(FMA(v11 - v10, t->fy, (v01 - v00) * ((T)1 - t->fy)), go, acc_x[ox]);
                acc_y[ox] = FMA(FMA(v11 - v01, t->fx, (v10 - v00) * ((T)1 - t->fx)), go, acc_y[ox]);
            }
        }
    }
}

/* Backward of one (batch item, group) slice over channels [c0, c1) and row cells [r0, r1):
 * grad_x (when not NULL) gets the scatter of grad_out; grad_offset (when not NULL) gets, for every
 * output pixel, the sum over the channels of grad_out times d(out)/d(position). */
static void FN(backward_slice)(const T *x, const T *offset, const T *grad_out, T *grad_x, T *grad_offset,
                               const int64_t *off_row, const int64_t *off_col, const int64_t *anchor_row,
                               const T *frac_row, const int64_t *anchor_col, const T *frac_col,
                               const int64_t *cell_start, int64_t b, int64_t g, int64_t c0, int64_t c1, int64_t r0,
                               int64_t r1, int64_t groups, int64_t cg, int64_t h, int64_t w, int64_t ho, int64_t wo,
                               int64_t s, int mode, TAP *taps, T *acc_x, T *acc_y) {
    const int64_t hw = h * w, howo = ho * wo, block = s * s * hw;
    const int64_t slice = b * groups + g;
    const int64_t offset_at = b * 2 * groups * block + g * block;
    const T *offset_x = offset + offset_at, *offset_y = offset_x + groups * block;
    for (int64_t oy = cell_start[r0]; oy < cell_start[r1]; ++oy) {
        FN(row_taps)(mode, offset_x, offset_y, off_row[oy], off_col, anchor_row[oy], frac_row[oy], anchor_col,
                     frac_col, h, w, wo, taps);
        if (grad_offset != NULL)
            for (int64_t ox = 0; ox < wo; ++ox) acc_x[ox] = acc_y[ox] = (T)0;
        else
            acc_x = acc_y = NULL;
        for (int64_t c = c0; c < c1; c += CHANNEL_BLOCK) {
            const T *const plane = x + (slice * cg + c) * hw;
            const T *const grad_row = grad_out + (slice * cg + c) * howo + oy * wo;
            T *const grad_plane = grad_x == NULL ? NULL : grad_x + (slice * cg + c) * hw;
            if (c1 - c >= CHANNEL_BLOCK)
                FN(backward_row)(taps, wo, CHANNEL_BLOCK, plane, hw, grad_row, howo, grad_plane, acc_x, acc_y);
            else
                FN(backward_row)(taps, wo, (int)(c1 - c), plane, hw, grad_row, howo, grad_plane, acc_x, acc_y);
        }
        if (grad_offset != NULL) {
            T *grad_x_block = grad_offset + offset_at, *grad_y_block = grad_x_block + groups * block;
            for (int64_t ox = 0; ox < wo; ++ox) {
                const TAP *t = taps + ox;
                const int64_t at = off_row[oy] + off_col[ox];
                T gx = acc_x[ox] * t->dx, gy = acc_y[ox] * t->dy;
                if (mode == MODE_GRID) { /* the autograd chain of 2 * p / size - 1 */
                    gx = gx / (T)w * (T)2;
                    gy = gy / (T)h * (T)2;
                }
                grad_x_block[at] += gx;
                grad_y_block[at] += gy;
            }
        }
    }
}

/* grad_x and grad_offset must be zero-filled (either may be NULL: not needed). */
int FN(dysample_backward)(const T *x, const T *offset, const T *grad_out, T *grad_x, T *grad_offset,
                          const int64_t *off_row, const int64_t *off_col, const int64_t *anchor_row,
                          const T *frac_row, const int64_t *anchor_col, const T *frac_col, const int64_t *cell_start,
                          int64_t n, int64_t groups, int64_t cg, int64_t h, int64_t w, int64_t ho, int64_t wo,
                          int64_t s, int mode, int threads) {
    const int64_t slices = n * groups, cells = s * h;
    int failed = 0;
    if (slices == 0 || cg == 0 || ho == 0 || wo == 0) return 0; /* an empty output: no gradient to spread */
    if (h * w == 0) return 2;                                    /* output pixels with no input pixel read */
    /* Enough slices: one pass per slice computes both gradients. Otherwise the offset gradient runs per
     * row cell (each cell's output rows in one task) and the input gradient per channel chunk (each
     * plane in one task): the same sums in the same order either way, so results do not depend on
     * the thread count. */
    const int one_pass = slices >= 2 * (int64_t)threads;
    const int64_t chunks = one_pass ? 1 : (2 * (int64_t)threads + slices - 1) / slices;
    const int64_t chunk = (cg + chunks - 1) / chunks;
#pragma omp parallel num_threads(threads)
    {
        TAP *taps = (TAP *)malloc(sizeof(TAP) * (size_t)wo);
        T *acc = (T *)malloc(sizeof(T) * 2 * (size_t)wo);
        int ok = taps != NULL && acc != NULL;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        if (one_pass) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t slice = 0; slice < slices; ++slice)
                if (ok)
                    FN(backward_slice)(x, offset, grad_out, grad_x, grad_offset, off_row, off_col, anchor_row,
                                       frac_row, anchor_col, frac_col, cell_start, slice / groups, slice % groups, 0,
                                       cg, 0, cells, groups, cg, h, w, ho, wo, s, mode, taps, acc, acc + wo);
        } else {
            if (grad_offset != NULL) {
#pragma omp for schedule(static)
                for (int64_t task = 0; task < slices * cells; ++task)
                    if (ok) {
                        const int64_t slice = task / cells, r = task % cells;
                        FN(backward_slice)(x, offset, grad_out, NULL, grad_offset, off_row, off_col, anchor_row,
                                           frac_row, anchor_col, frac_col, cell_start, slice / groups, slice % groups,
                                           0, cg, r, r + 1, groups, cg, h, w, ho, wo, s, mode, taps, acc, acc + wo);
                    }
            }
            if (grad_x != NULL) {
#pragma omp for schedule(dynamic, 1)
                for (int64_t task = 0; task < slices * chunks; ++task)
                    if (ok) {
                        const int64_t slice = task / chunks, c0 = (task % chunks) * chunk;
                        const int64_t c1 = c0 + chunk < cg ? c0 + chunk : cg;
                        if (c0 < c1)
                            FN(backward_slice)(x, offset, grad_out, grad_x, NULL, off_row, off_col, anchor_row,
                                               frac_row, anchor_col, frac_col, cell_start, slice / groups,
                                               slice % groups, c0, c1, 0, cells, groups, cg, h, w, ho, wo, s, mode,
                                               taps, acc, acc + wo);
                    }
            }
        }
        free(taps);
        free(acc);
    }
    return failed;
}

#undef CAT2
#undef CAT
#undef FN
#undef TAP
