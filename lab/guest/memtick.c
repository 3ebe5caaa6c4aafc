/*
 * memtick: the lab guest's workload (PID 1's child in the initramfs).
 *
 * Every second it prints one line on the console:
 *     memtick n=<counter> bad=<pages found corrupted so far> mib=<working set>
 * and between prints it keeps rewriting a working set of MIB MiB, page by page, with a
 * pattern derived from (page index, pass), checking before each rewrite that the page still
 * holds what the previous pass wrote. A migration that loses or corrupts guest memory shows
 * up as bad>0; one that stalls the guest shows up as a gap in n.
 *
 * A second argument RATE > 0 limits the rewriting to about RATE pages a second (a fleet's
 * small, mostly idle guests); 0, the default, rewrites as fast as the vCPU runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096

static uint64_t pattern(uint64_t page, uint64_t pass)
{
    uint64_t x = page * 0x9E3779B97F4A7C15ULL ^ pass * 0xC2B2AE3D27D4EB4FULL;
    x ^= x >> 31;
    return x | 1; /* never zero, so an all-zero page (lost) is always bad */
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 16;
    long rate = argc > 2 ? atol(argv[2]) : 0;
    long chunk = rate > 100 ? rate / 100 : 1, written = 0;
    struct timespec pause = {0, rate > 0 ? (rate >= 100 ? 10000000L : 1000000000L / rate) : 0};
    size_t pages = (size_t)mib * 1024 * 1024 / PAGE;
    uint64_t *mem = calloc(pages, PAGE);
    uint64_t *pass_of = calloc(pages, sizeof(uint64_t));
    unsigned long n = 0, bad = 0;
    size_t p = 0;
    if (!mem || !pass_of) {
        printf("memtick: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    double next = now() + 1.0;
    for (;;) {
        uint64_t *w = mem + p * (PAGE / 8);
        if (pass_of[p]) {
            uint64_t want = pattern(p, pass_of[p]);
            for (int i = 0; i < PAGE / 8; i++) {
                if (w[i] != want + (uint64_t)i) {
                    bad++;
                    break;
                }
            }
        }
        pass_of[p]++;
        uint64_t v = pattern(p, pass_of[p]);
        for (int i = 0; i < PAGE / 8; i++)
            w[i] = v + (uint64_t)i;
        p = (p + 1) % pages;
        if (rate > 0 && ++written >= chunk) {
            written = 0;
            nanosleep(&pause, NULL);
        }
        if ((rate > 0 || (p & 63) == 0) && now() >= next) {
            printf("memtick n=%lu bad=%lu mib=%ld\n", ++n, bad, mib);
            next += 1.0;
            if (next < now())
                next = now() + 1.0;
        }
    }
}
