// The in-process driver: a Host built from the config (fresh temporary gallery storage, no
// transports), items stored with Gallery::put and indexed with Pipeline::load, queries through
// HostService::recognize from the client threads.
#include <sightline/error.hpp>

#include <future>

#include "bench.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"

namespace sightline::bench {

namespace {

class InProcessDriver final : public Driver {
public:
    explicit InProcessDriver(const Options& o) : options_(o), plugins_(plugin_dirs(o)) {
        config_ = load_bench_config(o);
        host::apply_override(config_, "transports=[]");
        temp_ = make_temp_dir("sightline-bench");
        try {
            host::apply_override(config_, "storages." + gallery_storage_name(config_) +
                                              ".root=" + nlohmann::json((temp_ / "gallery").string()).dump());
            host_ = std::make_unique<host::Host>(config_, plugins_);
            service_ = std::make_unique<host::HostService>(*host_);
        } catch (...) {
            std::error_code ec;
            fs::remove_all(temp_, ec);
            throw;
        }
    }

    ~InProcessDriver() override {
        service_.reset();
        host_.reset();
        std::error_code ec;
        if (options_.keep_temp)
            note("kept the temporary gallery storage " + temp_.string());
        else
            fs::remove_all(temp_, ec);
    }

    std::string name() const override { return "in-process"; }

    IngestStats ingest(const std::vector<GalleryEntry>& items, const Budget& budget) override {
        IngestStats s;
        s.attempted = items.size();
        auto& gallery = host_->gallery();
        const auto t0 = Clock::now();
        {
            Progress bar("storing gallery", items.size());
            std::vector<std::future<void>> futures;
            std::vector<std::size_t> which;
            for (std::size_t i = 0; i < items.size() && !budget.expired(); ++i) {
                which.push_back(i);
                futures.push_back(host_->workers().submit([&, i] {
                    struct Tick {
                        Progress& b;
                        ~Tick() { b.tick(); }
                    } tick{bar};
                    Bytes image = read_file(items[i].file, kMaxImageBytes);
                    gallery.put(items[i].id, image, items[i].metadata);
                }));
            }
            for (std::size_t k = 0; k < futures.size(); ++k) {
                try {
                    futures[k].get();
                } catch (const std::exception& e) {
                    ++s.failed;
                    s.failures.emplace_back(items[which[k]].id, e.what());
                }
            }
        }
        for (const auto& name : host_->pipeline_names()) {
            Progress bar("indexing (" + name + ")", gallery.ids().size());
            auto st = host_->pipeline(name).load(gallery, &host_->workers(),
                                                 [&](std::size_t d, std::size_t) { bar.update(d); });
            if (name == host_->default_pipeline()) s.failed += st.failed;
        }
        s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        s.stored = host_->pipeline().size();
        return s;
    }

    Outcome recognize(const QueryCase& q, std::size_t client) override {
        Request req;
        req.id = q.name;  // the debug log then names the query file, as --mistakes does
        req.image = q.image;
        req.content_type = q.content_type;
        req.client_fields["client_id"] = "bench-" + std::to_string(client);
        Outcome out;
        const auto t0 = Clock::now();
        try {
            Result r = service_->recognize(std::move(req));
            out.end_to_end_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            for (const auto& m : r.matches) out.matches.push_back({m.id, m.score, m.inliers});
            out.timings_ms = r.timings_ms;
            if (r.error) out.error = r.error->code + ": " + r.error->message;
        } catch (const Error& e) {
            out.end_to_end_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            out.error = std::string(to_string(e.code())) + ": " + e.what();
        } catch (const std::exception& e) {
            out.end_to_end_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            out.error = std::string("internal: ") + e.what();
        }
        out.done = true;
        return out;
    }

    nlohmann::json config_summary() override { return summarize_pipeline(config_, plugins_, *host_); }

    std::optional<std::uint64_t> peak_rss_bytes() override { return vm_hwm_bytes(0); }
    std::string peak_rss_of() const override { return "bench process (in-process host)"; }
    std::size_t gallery_size() override { return host_->pipeline().size(); }

private:
    const Options& options_;
    std::vector<fs::path> plugins_;
    host::LoadedConfig config_;
    fs::path temp_;
    std::unique_ptr<host::Host> host_;
    std::unique_ptr<host::HostService> service_;
};

}  // namespace

std::unique_ptr<Driver> make_inprocess_driver(const Options& o) { return std::make_unique<InProcessDriver>(o); }

}  // namespace sightline::bench
