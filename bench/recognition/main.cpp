// sightline-bench-recognition — recall@1, false positives, latency, throughput and memory of a
// sightline pipeline on a gallery of images and phone-photo queries with known answers.
// Prints one JSON object on stdout; progress goes to stderr. See docs/bench.md.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <iostream>
#include <thread>

#include "bench.hpp"

namespace sightline::bench {

std::atomic<bool> g_interrupted{false};
std::atomic<long> g_child_pid{0};

namespace {

void on_signal(int) { g_interrupted.store(true); }

std::pair<double, double> parse_range(const std::string& opt, const std::string& s) {
    auto colon = s.find(':');
    try {
        if (colon == std::string::npos) throw std::invalid_argument(s);
        std::size_t a = 0, b = 0;
        double lo = std::stod(s.substr(0, colon), &a), hi = std::stod(s.substr(colon + 1), &b);
        if (a != colon || b != s.size() - colon - 1 || !(lo <= hi)) throw std::invalid_argument(s);
        return {lo, hi};
    } catch (const std::exception&) {
        throw UsageError(opt + ": expected MIN:MAX with MIN <= MAX, got '" + s + "'");
    }
}

RunResult run_queries(const Options& o, const Dataset& d, Driver& driver, const Budget& budget) {
    RunResult run;
    run.outcomes.resize(d.queries.size());
    std::atomic<std::size_t> next{0}, sent{0};
    Progress bar("recognizing", d.queries.size());
    const auto t0 = Clock::now();
    auto client = [&](std::size_t c) {
        for (;;) {
            std::size_t i = next++;
            if (i >= d.queries.size() || budget.expired()) return;
            run.outcomes[i] = driver.recognize(d.queries[i], c);
            ++sent;
            bar.tick();
        }
    };
    std::vector<std::thread> threads;
    for (std::size_t c = 0; c < o.concurrency; ++c) threads.emplace_back(client, c);
    for (auto& t : threads) t.join();
    run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    run.sent = sent.load();
    return run;
}

int run(const Options& o) {
    const auto t0 = Clock::now();
    Budget budget(o.max_seconds);

    // A watchdog: if the run hangs well past --max-seconds (a stuck request, a server that does not
    // answer), end the process and its server instead of running forever.
    std::mutex done_mutex;
    std::condition_variable done_cv;
    bool done = false;
    const double grace = std::max(60.0, o.max_seconds * 0.1);
    std::thread watchdog([&] {
        std::unique_lock lock(done_mutex);
        auto deadline = budget.end() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace));
        if (done_cv.wait_until(lock, deadline, [&] { return done; })) return;
        std::cerr << "sightline-bench-recognition: still running " << grace
                  << " s past --max-seconds; giving up\n";
        if (long pid = g_child_pid.load(); pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);
        std::_Exit(3);
    });
    struct StopWatchdog {
        std::mutex& m;
        std::condition_variable& cv;
        bool& done;
        std::thread& t;
        ~StopWatchdog() {
            {
                std::lock_guard lock(m);
                done = true;
            }
            cv.notify_all();
            t.join();
        }
    } stop_watchdog{done_mutex, done_cv, done, watchdog};

    std::unique_ptr<Driver> driver = o.http ? make_http_driver(o) : make_inprocess_driver(o);

    Dataset d = build_dataset(o, budget);
    std::size_t pos = 0;
    for (const auto& q : d.queries) pos += q.negative() ? 0 : 1;
    note("gallery: " + std::to_string(d.gallery.size()) + " images" +
         (d.held_out.empty() ? "" : " (" + std::to_string(d.held_out.size()) + " more held out as negatives)") +
         "; queries: " + std::to_string(pos) + " positive, " + std::to_string(d.queries.size() - pos) + " negative");
    if (!o.save_queries_dir.empty()) {
        save_queries(d, o.save_queries_dir);
        note("queries written to " + o.save_queries_dir);
    }

    IngestStats ingest = driver->ingest(d.gallery, budget);
    note("gallery ingested: " + std::to_string(ingest.stored) + " items in " + std::to_string(ingest.seconds) + " s" +
         (ingest.failed ? "; " + std::to_string(ingest.failed) + " failed" : ""));
    for (std::size_t i = 0; i < ingest.failures.size() && i < 10; ++i)
        note("  " + ingest.failures[i].first + ": " + ingest.failures[i].second);

    RunResult result = run_queries(o, d, *driver, budget);
    const bool truncated = budget.was_hit() || result.sent < d.queries.size();
    if (truncated)
        note(g_interrupted ? "interrupted: reporting what was done" : "--max-seconds reached: reporting what was done");
    nlohmann::json report = make_report(o, d, *driver, ingest, result,
                                        std::chrono::duration<double>(Clock::now() - t0).count(), truncated);
    driver->stop();
    driver.reset();
    if (!o.mistakes_csv.empty()) {
        write_mistakes(o.mistakes_csv, d, result);
        note("mistakes written to " + o.mistakes_csv);
    }
    report["elapsed_seconds"] = std::round(std::chrono::duration<double>(Clock::now() - t0).count() * 100) / 100;
    std::cout << report.dump(o.pretty ? 2 : -1) << std::endl;
    return 0;
}

}  // namespace

}  // namespace sightline::bench

int main(int argc, char** argv) {
    using namespace sightline::bench;
    Options o;
    CLI::App app{"sightline-bench-recognition: recall@1, false positives, latency and memory of a sightline pipeline "
                 "on phone-photo queries with known answers; prints one JSON object (see docs/bench.md)"};
    app.get_formatter()->column_width(34);
    std::string photo_size, scale, jpeg;
    bool in_process = false;

    app.add_option("--gallery", o.gallery_dirs, "gallery image directory (recursive; jpg, png, webp, bmp); repeatable")
        ->type_name("DIR");
    app.add_option("--exclude-dir", o.exclude_dirs,
                   "directory names skipped while scanning (default: queries); --exclude-dir '' skips none")
        ->type_name("NAME");
    app.add_option("--max-items", o.max_items, "use at most N gallery images (0: all)")->type_name("N");
    app.add_option("--set-dir", o.set_dir,
                   "a labelled set of real photos: DIR/gallery/, DIR/queries/, DIR/truth.tsv (replaces the "
                   "synthetic queries; --gallery dirs are added as distractors)")
        ->type_name("DIR");
    app.add_option("--queries", o.queries, "positive synthetic queries (default 100)")
        ->type_name("N")
        ->check(CLI::Range(std::size_t{0}, std::size_t{100000}));
    app.add_option("--negatives", o.negatives, "negative queries (images not in the gallery; default queries/5)")
        ->type_name("N")
        ->check(CLI::Range(std::size_t{0}, std::size_t{100000}));
    app.add_option("--negatives-from", o.negatives_from,
                   "directory of images not in the gallery for the negatives; default: hold out part of the "
                   "--gallery images")
        ->type_name("DIR");
    app.add_option("--holdout", o.holdout, "gallery images held out as negatives (default min(negatives, 10%))")
        ->type_name("K");
    app.add_option("--seed", o.seed, "seed of the query generator (default 1)")->type_name("S");
    app.add_option("--photo-size", photo_size, "synthetic photo size (default 1024x768, at most 4096x4096)")
        ->type_name("WxH");
    app.add_option("--scale", scale, "item scale range relative to the fit (default 0.3:1.0)")->type_name("MIN:MAX");
    app.add_option("--rotation", o.ranges.rotation_max_deg, "max rotation, degrees (default 30)")
        ->type_name("DEG")
        ->check(CLI::Range(0.0, 180.0));
    app.add_option("--tilt", o.ranges.tilt_max, "max perspective tilt 0..0.5 (default 0.3)")
        ->type_name("T")
        ->check(CLI::Range(0.0, 0.5));
    app.add_option("--blur", o.ranges.blur_max, "max Gaussian blur sigma, px (default 1.5)")
        ->type_name("SIGMA")
        ->check(CLI::Range(0.0, 20.0));
    app.add_option("--noise", o.ranges.noise_max, "max noise sigma, grey levels (default 6)")
        ->type_name("SIGMA")
        ->check(CLI::Range(0.0, 100.0));
    app.add_option("--jpeg", jpeg, "JPEG quality range (default 50:90)")->type_name("MIN:MAX");
    app.add_option("--cutoff", o.ranges.cutoff_probability, "probability that the item is partly cut off (default 0.1)")
        ->type_name("P")
        ->check(CLI::Range(0.0, 1.0));

    app.add_option("--backgrounds", o.backgrounds, "clutter backgrounds shared by the queries (default up to 32)")
        ->type_name("N")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1024}));

    auto* ip = app.add_flag("--in-process", in_process, "drive a Host in this process (the default)");
    app.add_flag("--http", o.http, "start `sightline serve` and drive its HTTP API")->excludes(ip);
    app.add_option("--concurrency,-c", o.concurrency, "concurrent clients (default 2)")
        ->type_name("C")
        ->check(CLI::Range(std::size_t{1}, std::size_t{256}));
    app.add_option("--config", o.config_file,
                   "config file (default: config/default.yaml if present, else the built-in default)")
        ->type_name("FILE");
    app.add_option("--set", o.overrides, "override a config value, e.g. pipelines.surf.verify.min_inliers=20; repeatable")
        ->type_name("KEY=VALUE");
    app.add_option("--plugins", o.plugin_dirs, "plugin directory (default <exe dir>/../plugins); repeatable")
        ->type_name("DIR");
    app.add_option("--sightline", o.sightline_bin, "the sightline executable for --http (default <exe dir>/sightline)")
        ->type_name("BIN");
    app.add_option("--ready-timeout", o.ready_timeout_s, "seconds to wait for the server's /readyz (default 600)")
        ->type_name("S");
    app.add_flag("--keep-sinks", o.keep_sinks, "keep the config's result sinks (default: sinks=[])");
    app.add_option("--log-level", o.log_level, "host log level (default warn)")->type_name("LEVEL");
    app.add_option("--mistakes", o.mistakes_csv, "write the misrecognitions as CSV")->type_name("FILE.csv");
    app.add_option("--save-queries", o.save_queries_dir, "write the queries, truth.tsv and params.tsv here")
        ->type_name("DIR");
    app.add_option("--max-seconds", o.max_seconds, "stop issuing work after this many seconds (default 1800)")
        ->type_name("S")
        ->check(CLI::Range(1.0, 7.0 * 86400));
    app.add_flag("--keep-temp", o.keep_temp, "keep the temporary gallery storage (and server log)");
    app.add_flag("--pretty", o.pretty, "indent the JSON");
    CLI11_PARSE(app, argc, argv);
    log_to_stderr("sightline-bench-recognition");

    try {
        o.exclude_dirs.erase(std::remove(o.exclude_dirs.begin(), o.exclude_dirs.end(), std::string()),
                             o.exclude_dirs.end());
        if (!photo_size.empty()) {
            int w = 0, h = 0;
            char x = 0, extra = 0;
            if (std::sscanf(photo_size.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || (x != 'x' && x != 'X') ||
                w < 64 || h < 64 || w > 4096 || h > 4096)
                throw UsageError("--photo-size: expected WxH within 64..4096, got '" + photo_size + "'");
            o.photo_width = w;
            o.photo_height = h;
        }
        if (!scale.empty()) {
            auto [lo, hi] = parse_range("--scale", scale);
            if (lo <= 0 || hi > 4) throw UsageError("--scale: values must lie in (0, 4]");
            o.ranges.scale_min = lo;
            o.ranges.scale_max = hi;
        }
        if (!jpeg.empty()) {
            auto [lo, hi] = parse_range("--jpeg", jpeg);
            if (lo < 1 || hi > 100) throw UsageError("--jpeg: qualities must lie in 1..100");
            o.ranges.jpeg_min = static_cast<int>(lo);
            o.ranges.jpeg_max = static_cast<int>(hi);
        }
        if (o.http && !http_driver_available())
            throw UsageError("--http: this build has no HTTP client (install libcpp-httplib-dev and reconfigure)");
        if (!o.set_dir.empty() && o.gallery_dirs.empty() && o.max_items)
            throw UsageError("--max-items limits the --gallery distractors of a --set-dir run; none were given");

        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESETHAND;  // a second signal ends the process
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);
        ::signal(SIGPIPE, SIG_IGN);

        return run(o);
    } catch (const UsageError& e) {
        std::cerr << "sightline-bench-recognition: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sightline-bench-recognition: " << e.what() << "\n";
        return 1;
    }
}
