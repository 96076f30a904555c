/* DySample's bilinear read on the CPU: forward and backward for float and double.
 *
 * Built on first use by dysample_swap/native.py (plain C, OpenMP, no PyTorch headers) and
 * called through ctypes. The offsets are read in the spec layout (N, 2*G*s*s, H, W) through
 * per-output-row and per-output-column tables, so no permuted copy of them is made.
 * sampler_impl.h holds the code; it is included once per scalar type.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MODE_EXACT 0 /* anchor index + (anchor fraction + offset), F.interpolate's arithmetic */
#define CHANNEL_BLOCK 4 /* channels interleaved in the backward's inner loop */
#define MODE_GRID 1  /* grid_sample's normalised coordinates and border clamp, its arithmetic */

#define T float
#define SUFFIX f32
#define FMA fmaf
#define FLOOR floorf
#include "sampler_impl.h"
#undef T
#undef SUFFIX
#undef FMA
#undef FLOOR

#define T double
#define SUFFIX f64
#define FMA fma
#define FLOOR floor
#include "sampler_impl.h"
#undef T
#undef SUFFIX
#undef FMA
#undef FLOOR

int dysample_abi_version(void) { return 1; }
