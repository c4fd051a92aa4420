#include "commands.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/fmt/ranges.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <set>

#include "embedded_config.hpp"
#include "sightline/host/console.hpp"
#include "sightline/host/gallery_lease.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"
#include "sightline/host/result_json.hpp"

#include <sightline/vocabulary.hpp>

namespace fs = std::filesystem;
using namespace sightline;
using namespace sightline::host;

namespace sightline::app {

namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<Host> make_host(const GlobalOptions& g) {
    return std::make_unique<Host>(load(g), fallback_plugin_paths());
}

}  // namespace

std::vector<fs::path> fallback_plugin_paths() {
    boost::system::error_code ec;
    fs::path exe = boost::dll::program_location(ec).string();
    if (ec) return {};
    fs::path dir = exe.parent_path();
    return {dir.parent_path() / "plugins", dir.parent_path() / "lib" / "sightline" / "plugins"};
}

LoadedConfig load(const GlobalOptions& g) {
    LoadedConfig c;
    if (!g.config.empty())
        c = load_config_file(g.config);
    else if (fs::exists("config/default.yaml"))
        c = load_config_file("config/default.yaml");
    else
        c = load_config_text(kEmbeddedDefaultConfig, "<built-in default.yaml>");
    for (const auto& o : g.overrides) apply_override(c, o);
    if (!g.log_level.empty()) {
        const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
        if (!levels.count(g.log_level))
            throw Error(ErrorCode::invalid_argument,
                        "--log-level: unknown level '" + g.log_level + "' (trace, debug, info, warn, error or off)");
        // Into the config, so the Host applies this level, not the file's, before it logs anything.
        apply_override(c, "logging.level=" + g.log_level);
    }
    // Commands that build no Host (config check, plugins) log too: the registry's warnings.
    apply_log_level(c);
    return c;
}

int cmd_ingest(const GlobalOptions& g, const std::vector<std::string>& inputs, const std::string& id_from) {
    std::vector<fs::path> files;
    for (const auto& in : inputs) {
        fs::path p(in);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            for (const auto& e : fs::recursive_directory_iterator(p, ec))
                if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
        } else if (fs::is_regular_file(p, ec)) {
            files.push_back(p);
        } else {
            throw Error(ErrorCode::not_found, "ingest: '" + in + "' is neither a file nor a directory");
        }
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw Error(ErrorCode::not_found, "ingest: no images (jpg, png, webp, bmp) found");

    auto host_ptr = make_host(g);
    Host& host = *host_ptr;
    auto& gallery = host.gallery();
    // A running server would not see what is written here until it restarts: refused while one runs.
    GalleryLease lease(gallery, GalleryLease::Kind::ingest);
    struct Failure {
        std::string file, reason;
    };
    std::vector<Failure> failures;
    std::set<std::string> seen;
    std::vector<std::pair<fs::path, std::string>> work;
    for (const auto& f : files) {
        std::string id = id_from == "name" ? f.filename().string() : f.stem().string();
        if (auto why = invalid_id_reason(id)) {
            failures.push_back({f.string(), "cannot be an item id: " + *why});
            continue;
        }
        if (!seen.insert(id).second) {
            failures.push_back({f.string(), "duplicate id '" + id + "' in this ingest"});
            continue;
        }
        work.emplace_back(f, id);
    }

    std::vector<std::string> pipelines = host.pipeline_names();
    ProgressBar bar("ingest", work.size());
    std::atomic<std::size_t> done{0};
    auto t0 = Clock::now();
    std::vector<std::future<void>> futures;
    for (const auto& [file, id] : work) {
        futures.push_back(host.workers().submit([&, file = file, id = id] {
            struct Tick {
                ProgressBar& bar;
                std::atomic<std::size_t>& done;
                ~Tick() { bar.update(++done); }
            } tick{bar, done};
            Bytes image = read_file(file);
            std::string metadata = "{}";
            fs::path sidecar = fs::path(file).replace_extension(".json");
            if (fs::exists(sidecar)) {
                Bytes m = read_file(sidecar);
                metadata.assign(m.begin(), m.end());
                if (nlohmann::json::parse(metadata, nullptr, false).is_discarded())
                    throw Error(ErrorCode::invalid_argument, sidecar.string() + " is not valid JSON");
            }
            // Extract first: an image that cannot be decoded never enters the gallery.
            std::vector<Gallery::RecordBytes> records;
            for (const auto& name : pipelines) {
                auto r = host.pipeline(name).extract_item(id, image);
                records.push_back({r.signature, encode_record(r)});
            }
            gallery.put(id, image, metadata, records);
        }));
    }
    for (std::size_t i = 0; i < futures.size(); ++i) {
        try {
            futures[i].get();
        } catch (const std::exception& e) {
            failures.push_back({work[i].first.string(), e.what()});
        }
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::size_t ok = work.size() - (failures.size() - (files.size() - work.size()));
    std::printf("ingested %zu of %zu images in %.2f s (%.1f images/s) into %s; %zu failed\n", ok, files.size(), secs,
                secs > 0 ? static_cast<double>(ok) / secs : 0.0, "the gallery", failures.size());
    for (const auto& f : failures) std::printf("  failed: %s: %s\n", f.file.c_str(), f.reason.c_str());
    std::printf("gallery now holds %zu items\n", gallery.ids().size());
    return failures.empty() ? 0 : 1;
}

int cmd_query(const GlobalOptions& g, const std::vector<std::string>& images, const std::string& pipeline_name,
              bool pretty) {
    auto host_ptr = make_host(g);
    Host& host = *host_ptr;
    auto& pipeline = host.pipeline(pipeline_name);
    std::size_t total = host.gallery().ids().size();
    ProgressBar bar("loading gallery", total);
    pipeline.load(host.gallery(), &host.workers(), [&](std::size_t d, std::size_t) { bar.update(d); });
    if (pipeline.size() == 0)
        spdlog::warn("the gallery is empty: nothing can match (add images with `sightline ingest DIR`)");
    int status = 0;
    std::size_t n = 0;
    for (const auto& path : images) {
        Request req;
        req.id = "q" + std::to_string(++n);
        req.deadline = Clock::now() + host.limits().request_timeout;
        nlohmann::json out;
        try {
            req.image = read_file(path);
            out = to_json(pipeline.recognize(req));
        } catch (const Error& e) {
            Result r;
            r.request_id = req.id;
            r.error = ErrorInfo{to_string(e.code()), e.what()};
            out = to_json(r);
        }
        if (out.contains("error")) status = 1;
        nlohmann::json line{{"image", path}};
        line.update(out);
        std::cout << line.dump(pretty ? 2 : -1) << "\n";
    }
    return status;
}

int cmd_serve(const GlobalOptions& g) {
    // Block the stop signals before any thread starts, so every thread inherits the mask and the
    // main thread alone receives them through sigwait.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    auto host_ptr = make_host(g);
    Host& host = *host_ptr;
    if (host.transports().empty())
        throw Error(ErrorCode::invalid_argument,
                    "nothing to serve: the config has no transports (add e.g. `transports: [{type: http, listen: "
                    "\"127.0.0.1:8080\"}]` or --set 'transports=[{type: http}]')");
    // Held until the process ends (a SIGKILLed server's lease is seen to be stale on this host).
    GalleryLease lease(host.gallery(), GalleryLease::Kind::serve);
    HostService service(host);
    // On every way out (an exception included), transports stop before the service they call goes.
    struct StopTransports {
        Host& host;
        std::chrono::milliseconds deadline;
        bool stopped = false;
        void operator()() {
            if (stopped) return;
            stopped = true;
            for (const auto& t : host.transports()) {
                try {
                    t->stop(deadline);
                } catch (const std::exception& e) {
                    spdlog::error("stopping a transport failed: {}", e.what());
                }
            }
        }
        ~StopTransports() { (*this)(); }
    } stop_transports{host, host.limits().shutdown_timeout};
    for (const auto& t : host.transports()) t->start(service);
    auto log = make_logger("serve");
    std::size_t total = host.gallery().ids().size();
    log->info("loading the gallery ({} items); /readyz answers 503 until done", total);
    ProgressBar bar("loading gallery", total);
    service.load_gallery([&](std::size_t d, std::size_t) { bar.update(d); });
    log->info("ready: {} items, pipelines: {}", host.pipeline().size(), fmt::join(host.pipeline_names(), ", "));

    int sig = 0;
    sigwait(&stop_signals, &sig);
    log->info("{} received: no new requests; draining for at most {} ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
              host.limits().shutdown_timeout.count());
    const auto t0 = Clock::now();
    stop_transports();
    auto left = host.limits().shutdown_timeout -
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    std::size_t unfinished = service.drain(std::max(left, std::chrono::milliseconds(0)));
    if (unfinished) log->warn("{} requests were still running at the shutdown deadline", unfinished);
    service.flush_sinks();
    if (!unfinished) host.save_snapshots();  // nothing is in flight any more
    log->info("stopped");
    return unfinished ? 1 : 0;
}

int cmd_plugins(const GlobalOptions& g) {
    auto config = load(g);
    PluginRegistry registry(plugin_paths(config, fallback_plugin_paths()));
    registry.load_all();
    std::printf("%-10s %-12s %-8s %s\n", "KIND", "NAME", "VERSION", "FILE");
    for (const auto& p : registry.plugins())
        std::printf("%-10s %-12s %-8s %s\n", to_string(p.manifest->kind), p.manifest->name, p.manifest->plugin_version,
                    p.file.c_str());
    for (const auto& r : registry.refused()) std::printf("refused: %s\n", r.reason.c_str());
    if (registry.plugins().empty()) {
        std::fprintf(stderr, "no plugins found in:");
        for (const auto& p : registry.search_paths()) std::fprintf(stderr, " %s", p.c_str());
        std::fprintf(stderr, "\n");
        return 1;
    }
    return 0;
}

int cmd_plugins_describe(const GlobalOptions& g, const std::string& full_name) {
    auto config = load(g);
    PluginRegistry registry(plugin_paths(config, fallback_plugin_paths()));
    registry.load_all();
    for (const auto& p : registry.plugins()) {
        if (p.full_name() != full_name && p.manifest->name != full_name) continue;
        std::printf("%s %s: %s\n  file: %s\n  keys:\n", p.full_name().c_str(), p.manifest->plugin_version,
                    p.manifest->description, p.file.c_str());
        for (const auto& k : p.schema()) {
            std::string bounds;
            if (!std::isinf(k.min) || !std::isinf(k.max)) {
                std::ostringstream s;
                s << " [";
                if (std::isinf(k.min)) s << "-inf"; else s << k.min;
                s << ", ";
                if (std::isinf(k.max)) s << "inf"; else s << k.max;
                s << "]";
                bounds = s.str();
            }
            std::printf("    %-18s %-14s %s%s%s%s\n      %s\n", k.name, to_string(k.type),
                        k.required ? "required" : (std::string("default ") + (k.default_value ? k.default_value : "none")).c_str(),
                        bounds.c_str(), k.choices ? " one of " : "", k.choices ? k.choices : "", k.description);
        }
        return 0;
    }
    std::fprintf(stderr, "sightline: no plugin named '%s' (see `sightline plugins`)\n", full_name.c_str());
    return 1;
}

int cmd_config_check(const GlobalOptions& g, const std::string& file) {
    GlobalOptions opts = g;
    if (!file.empty()) opts.config = file;
    auto config = load(opts);
    PluginRegistry registry(plugin_paths(config, fallback_plugin_paths()));
    registry.load_all();
    auto errors = check_config(config, registry);
    if (errors.empty()) {
        std::printf("%s: OK\n", config.file.c_str());
        return 0;
    }
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    std::fprintf(stderr, "%s: %zu problem%s\n", config.file.c_str(), errors.size(), errors.size() == 1 ? "" : "s");
    return 1;
}

}  // namespace sightline::app

namespace sightline::app {

int cmd_vocab_train(const GlobalOptions& g, const VocabTrainOptions& o) {
    // No indexes: the one this vocabulary is for may not be constructible without it.
    auto host_ptr = std::make_unique<Host>(load(g), fallback_plugin_paths(), HostOptions{.indexes = false});
    Host& host = *host_ptr;
    Pipeline& pipeline = host.pipeline(o.pipeline);
    auto out_storage = host.storage(o.storage);
    check_key(o.out);

    // The training images: a directory's image files, or a storage's (the gallery's items when it is
    // the gallery storage).
    struct Source {
        std::string name;
        std::function<Bytes()> read;
    };
    std::vector<Source> sources;
    std::error_code ec;
    if (fs::is_directory(o.from, ec)) {
        std::vector<fs::path> files;
        for (const auto& e : fs::recursive_directory_iterator(o.from, ec))
            if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
        std::sort(files.begin(), files.end());
        for (const auto& f : files) sources.push_back({f.string(), [f, &host] { return read_file(f, host.limits().max_body_bytes); }});
    } else {
        std::shared_ptr<Storage> storage;
        try {
            storage = host.storage(o.from);
        } catch (const Error&) {
            throw Error(ErrorCode::not_found, "vocab train: --from '" + o.from +
                                                  "' is neither a directory nor a storage named in the config");
        }
        if (storage == host.storage(host.config().root["gallery"]["storage"].Scalar())) {
            for (const auto& id : host.gallery().ids())
                sources.push_back({id, [id, &host] {
                                       auto b = host.gallery().image(id);
                                       if (!b) throw Error(ErrorCode::not_found, "gallery item '" + id + "' has no image");
                                       return *b;
                                   }});
        } else {
            for (const auto& key : storage->list(""))
                if (is_image_file(key))
                    sources.push_back({key, [key, storage] {
                                           auto b = storage->get(key);
                                           if (!b) throw Error(ErrorCode::not_found, "'" + key + "' vanished");
                                           return *b;
                                       }});
        }
    }
    if (o.max_images > 0 && sources.size() > o.max_images) sources.resize(o.max_images);
    if (sources.empty()) throw Error(ErrorCode::not_found, "vocab train: no training images in '" + o.from + "'");

    const std::string signature = pipeline.extractor().signature();
    std::fprintf(stderr, "training a vocabulary for pipeline %s (%s) on %zu images, %d crops each\n",
                 pipeline.name().c_str(), signature.c_str(), sources.size(), o.crops);
    const auto t0 = Clock::now();
    std::vector<cv::Mat> per_image(sources.size() * static_cast<std::size_t>(1 + o.crops));
    std::vector<std::string> failures(sources.size());
    {
        ProgressBar bar("extract", sources.size());
        std::vector<std::future<void>> futures;
        for (std::size_t i = 0; i < sources.size(); ++i)
            futures.push_back(host.workers().submit([&, i] {
                try {
                    Bytes bytes = sources[i].read();
                    const std::size_t base = i * static_cast<std::size_t>(1 + o.crops);
                    per_image[base] = pipeline.extract_item("train", bytes).features.descriptors;
                    if (o.crops > 0) {
                        // Zoomed-in views: more, finer descriptors from few large images.
                        DecodedImage d = decode_gray(bytes, {host.limits().max_body_bytes, host.limits().max_pixels}, 0);
                        cv::RNG rng(o.seed * 7919 + i);
                        for (int c = 0; c < o.crops; ++c) {
                            const double f = rng.uniform(0.3, 0.7);
                            const int w = std::max(16, static_cast<int>(d.gray.cols * f));
                            const int h = std::max(16, static_cast<int>(d.gray.rows * f));
                            const int x = rng.uniform(0, std::max(1, d.gray.cols - w + 1));
                            const int y = rng.uniform(0, std::max(1, d.gray.rows - h + 1));
                            cv::Rect r(x, y, std::min(w, d.gray.cols - x), std::min(h, d.gray.rows - y));
                            per_image[base + 1 + static_cast<std::size_t>(c)] =
                                pipeline.extract_item("train", d.gray(r).clone()).features.descriptors;
                        }
                    }
                } catch (const std::exception& e) {
                    failures[i] = e.what();
                }
                bar.tick();
            }));
        for (auto& f : futures) f.get();
    }
    std::size_t failed = 0, descriptors = 0;
    for (std::size_t i = 0; i < sources.size(); ++i)
        if (!failures[i].empty()) {
            ++failed;
            std::fprintf(stderr, "  skipped %s: %s\n", sources[i].name.c_str(), failures[i].c_str());
        }
    for (const auto& m : per_image) descriptors += static_cast<std::size_t>(m.rows);
    Vocabulary::TrainParams params;
    params.branching = o.branching;
    params.depth = o.depth;
    params.iterations = o.iterations;
    params.max_samples = o.max_samples;
    params.seed = o.seed;
    Vocabulary vocab;
    {
        ProgressBar bar("cluster", std::min(descriptors, o.max_samples));
        vocab = Vocabulary::train(per_image, params, signature, [&](std::size_t done, std::size_t) { bar.update(done); });
    }
    const Bytes bytes = vocab.serialize();
    out_storage->put(o.out, bytes);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("vocabulary %s in storage %s: %u words (branching %d, depth %d) from %zu descriptors of %zu images "
                "(%zu skipped), %.1f KB, %.1f s\n  trained for %s\n",
                o.out.c_str(), o.storage.c_str(), vocab.words(), o.branching, o.depth, descriptors,
                sources.size() - failed, failed, static_cast<double>(bytes.size()) / 1024.0, secs, signature.c_str());
    return failed == sources.size() ? 1 : 0;
}

}  // namespace sightline::app
