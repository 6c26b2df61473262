/* c_kernel_timer.c: time the OpenMP parallel regions of an unmodified program.
 *
 * An LD_PRELOAD shim for the benchmark runner (bench/run.py).  The C
 * nanoBragg has exactly one OpenMP parallel region, its pixel loop; built
 * with GCC's -fopenmp it enters that region through libgomp's
 * GOMP_parallel().  This file defines GOMP_parallel, which forwards to
 * libgomp's (dlsym RTLD_NEXT) and adds the CLOCK_MONOTONIC time of the call
 * to a total.  Nested regions (a GOMP_parallel inside one) are counted but
 * not timed again.  The C program's output is unchanged: at exit (a library
 * destructor, so after main returns or exit() is called) the shim appends
 * ONE line to the file named by $NB_KERNEL_TIMER_OUT, nothing to stdout or
 * stderr:
 *
 *     nb_kernel_timer pid=<pid> regions=<n> seconds=<total> exe=<path>
 *
 * (exe: /proc/self/exe, last on the line since a path may hold spaces).
 * Every process that loads the shim writes its line (a wrapper such as
 * /usr/bin/time writes regions=0), so a program with no GOMP_parallel call
 * (a build without OpenMP) is told apart from a shim that was not loaded
 * into it (no line of its exe: a static binary).
 * Without $NB_KERNEL_TIMER_OUT the shim writes nothing.
 *
 * Build:  cc -O2 -shared -fPIC -o c_kernel_timer.so c_kernel_timer.c -ldl
 * Use:    NB_KERNEL_TIMER_OUT=t.txt LD_PRELOAD=$PWD/c_kernel_timer.so ./nanoBragg ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

static gomp_parallel_fn real_gomp_parallel;
static double total_seconds;        /* only the outermost regions, entered from one thread at a time */
static unsigned long regions;       /* every call, nested ones too */
static __thread int depth;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)
{
    if (!real_gomp_parallel) {
        /* the versioned symbol the program was linked against, else the default one */
        real_gomp_parallel = (gomp_parallel_fn)dlvsym(RTLD_NEXT, "GOMP_parallel", "GOMP_4.0");
        if (!real_gomp_parallel)
            real_gomp_parallel = (gomp_parallel_fn)dlsym(RTLD_NEXT, "GOMP_parallel");
        if (!real_gomp_parallel) {
            static const char msg[] = "c_kernel_timer: GOMP_parallel not found after the shim\n";
            (void)!write(2, msg, sizeof msg - 1);
            abort();
        }
    }
    __atomic_add_fetch(&regions, 1, __ATOMIC_RELAXED);
    if (depth++ > 0) {              /* nested: the outer call's time already covers it */
        real_gomp_parallel(fn, data, num_threads, flags);
        depth--;
        return;
    }
    double t0 = now();
    real_gomp_parallel(fn, data, num_threads, flags);
    total_seconds += now() - t0;
    depth--;
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("NB_KERNEL_TIMER_OUT");
    char exe[4096], line[4096 + 160];
    ssize_t len;
    int fd, n;
    if (!path || !*path)
        return;
    len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[len > 0 ? len : 0] = '\0';
    n = snprintf(line, sizeof line, "nb_kernel_timer pid=%ld regions=%lu seconds=%.9f exe=%s\n",
                 (long)getpid(), __atomic_load_n(&regions, __ATOMIC_RELAXED), total_seconds, exe);
    if (n < 0 || n >= (int)sizeof line)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    (void)!write(fd, line, (size_t)n);   /* one write with O_APPEND: lines of several processes do not mix */
    close(fd);
}
