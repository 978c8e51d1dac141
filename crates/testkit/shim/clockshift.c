/*
 * clockshift: LD_PRELOAD shim that shifts a process's wall clock by
 * CLOCKSHIFT_OFFSET_US microseconds (may be negative), for tests of a
 * source Redis whose clock disagrees with its predecessor's.
 *
 * Only the wall clock moves (gettimeofday, time, clock_gettime with
 * CLOCK_REALTIME*); monotonic clocks are untouched. Each call goes to the
 * kernel with syscall(2): no dlsym and no allocation, so it works inside
 * redis-server, whose jemalloc start-up deadlocks libfaketime.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset_us(void) {
    static int loaded = 0;
    static long long offset = 0;
    if (!loaded) {
        const char *v = getenv("CLOCKSHIFT_OFFSET_US");
        offset = v ? strtoll(v, NULL, 10) : 0;
        loaded = 1;
    }
    return offset;
}

static int is_realtime(clockid_t id) {
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    long r = syscall(SYS_clock_gettime, id, ts);
    if (r == 0 && ts && is_realtime(id)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_us() * 1000LL;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
        if (ts->tv_nsec < 0) {
            ts->tv_nsec += 1000000000LL;
            ts->tv_sec -= 1;
        }
    }
    return (int)r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    (void)tz;
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
