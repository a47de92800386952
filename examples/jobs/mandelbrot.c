/* Renders a tile of the Mandelbrot set as a binary PGM (P5) image.
 *
 * Input (decimal numbers, any separators): width height tile_x tile_y tile_w tile_h max_iter.
 * The full image spans re [-2.5, 1.0] x im [-1.25, 1.25] over width x height pixels; the job renders the
 * tile_w x tile_h pixels whose top-left corner is (tile_x, tile_y). Empty input: the whole 512x384 image
 * at 256 iterations. Tiles of one image, stacked, give byte-for-byte the rows of the whole image, which is
 * how the demo shards it. Floating point is deterministic here: the sandbox canonicalises NaNs and the
 * arithmetic is IEEE 754 on every node. */
#include "icn_guest.h"

int run(void) {
    int32_t len = 0;
    char *text = icn_read_all(&len);
    if (!text) return 2;
    uint64_t v[7] = {512, 384, 0, 0, 512, 384, 256};
    int got = icn_parse_u64s(text, v, 7);
    if (got != 0 && got != 7) {
        icn_log_str(4, "input: width height tile_x tile_y tile_w tile_h max_iter (or nothing)");
        return 1;
    }
    uint64_t w = v[0], h = v[1], tx = v[2], ty = v[3], tw = v[4], th = v[5], max_iter = v[6];
    if (w == 0 || h == 0 || w > 16384 || h > 16384 || tw == 0 || th == 0 || tx + tw > w || ty + th > h ||
        max_iter == 0 || max_iter > 100000) {
        icn_log_str(4, "tile out of range (width, height <= 16384; tile inside the image; max_iter <= 100000)");
        return 1;
    }
    char header[64];
    int k = 0;
    header[k++] = 'P'; header[k++] = '5'; header[k++] = '\n';
    k += icn_fmt_u64(header + k, tw); header[k++] = ' ';
    k += icn_fmt_u64(header + k, th); header[k++] = '\n';
    header[k++] = '2'; header[k++] = '5'; header[k++] = '5'; header[k++] = '\n';
    if (icn_put_output(header, k) != 0) return 3;

    unsigned char *row = icn_alloc(tw);
    if (!row) return 3;
    for (uint64_t y = ty; y < ty + th; y++) {
        double ci = -1.25 + 2.5 * ((double)y + 0.5) / (double)h;
        for (uint64_t x = tx; x < tx + tw; x++) {
            double cr = -2.5 + 3.5 * ((double)x + 0.5) / (double)w;
            double zr = 0, zi = 0;
            uint64_t i = 0;
            while (i < max_iter && zr * zr + zi * zi <= 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2 * zr * zi + ci;
                zr = t;
                i++;
            }
            row[x - tx] = i >= max_iter ? 0 : (unsigned char)(255 - (i * 255) / max_iter);
        }
        if (icn_put_output(row, (int32_t)tw) != 0) return 3;
        icn_progress((int32_t)((y - ty + 1) * 1000 / th));
    }
    return 0;
}
