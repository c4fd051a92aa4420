// HostService on a real Host: the work it accounts for outlives callers that gave up; gallery
// changes keep storage, journal and every pipeline's index in step under races and failures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <future>
#include <latch>
#include <thread>

#include <nlohmann/json.hpp>

#include "photos.hpp"
#include "sightline/host/gallery_lease.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

// A gallery on a local storage seen through storage-faulty (puts fail on demand, see
// tests/fixtures/plugins/faulty_storage.cpp), with two ORB pipelines, so "every pipeline's index"
// means more than one.
struct GalleryHost {
    explicit GalleryHost(const fs::path& dir) : dir(dir) {
        write_text(dir / "config.yaml",
                   "plugins: { paths: [" + yq(plugin_dir()) + ", " + yq(fixture_good_dir()) + "] }\n"
                   "storages:\n"
                   "  disk: { type: local, root: " + yq(dir / "gallery") + ", fsync: false }\n"
                   "  gallery: { type: faulty, inner: disk, control: " + yq(control()) + " }\n"
                   "gallery: { storage: gallery }\n"
                   "pipelines:\n"
                   "  a: { features: { type: orb, max_features: 500, fast_threshold: 12 }, index: { type: bruteforce } }\n"
                   "  b: { features: { type: orb, max_features: 300, fast_threshold: 12 }, index: { type: bruteforce } }\n"
                   "limits: { workers: 2 }\n"
                   "logging: { level: error }\n");
        restart();
    }
    // A new process on the same gallery: snapshot (if any) + journal replay.
    void restart() {
        service.reset();
        host.reset();
        host = std::make_unique<Host>(load_config_file(dir / "config.yaml"));
        service = std::make_unique<HostService>(*host);
        service->load_gallery();
    }
    fs::path control() const { return dir / "fault"; }
    // The next n-th put fails; "full": it and every later one, until heal().
    void fail_put(int n, const std::string& mode = "once") { write_text(control(), mode + " " + std::to_string(n)); }
    void heal() { fs::remove(control()); }

    fs::path dir;
    std::unique_ptr<Host> host;
    std::unique_ptr<HostService> service;
};

bool matched(const Result& r, const std::string& id, std::string* metadata = nullptr) {
    for (const auto& m : r.matches)
        if (m.id == id) {
            if (metadata) *metadata = m.metadata_json;
            return true;
        }
    return false;
}

Result recognize_with(Pipeline& p, const Bytes& image) {
    Request r;
    r.id = "q";
    r.image = image;
    r.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    return p.recognize(r);
}

// The rule for one id: the stored image is one of `images` (or none) with the metadata that came
// with it ({"image": i}), and every pipeline holds exactly that: it finds the id in the stored
// image, with the stored metadata, and in no other of `images`.
void expect_agreement(GalleryHost& g, const std::string& id, const std::vector<Bytes>& images) {
    SCOPED_TRACE("item '" + id + "'");
    auto stored = g.host->gallery().image(id);
    int which = -1;
    for (std::size_t i = 0; i < images.size(); ++i)
        if (stored && *stored == images[i]) which = static_cast<int>(i);
    if (stored) {
        ASSERT_GE(which, 0) << "the stored image is none of those put";
        EXPECT_EQ(nlohmann::json::parse(g.host->gallery().metadata(id)), nlohmann::json({{"image", which}}))
            << "the stored metadata came with another image";
    }
    for (const auto& name : g.host->pipeline_names()) {
        Pipeline& p = g.host->pipeline(name);
        EXPECT_EQ(p.contains(id), stored.has_value()) << "pipeline " << name;
        for (std::size_t i = 0; i < images.size(); ++i) {
            std::string metadata;
            const bool found = matched(recognize_with(p, images[i]), id, &metadata);
            EXPECT_EQ(found, static_cast<int>(i) == which) << "pipeline " << name << ", image " << i;
            if (found) {
                EXPECT_EQ(nlohmann::json::parse(metadata), nlohmann::json({{"image", which}})) << name;
            }
        }
    }
}

std::string meta(int image) { return nlohmann::json({{"image", image}}).dump(); }

// put/put and put/remove on one id, each pair released together, `rounds` times.
void race(HostService& service, const std::vector<Bytes>& pp, const std::vector<Bytes>& pr, int rounds,
          GalleryHost& g) {
    for (int round = 0; round < rounds; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        std::latch start(4);
        std::mutex mutex;
        std::vector<std::string> errors;
        auto run = [&](auto f) {
            return std::thread([&, f] {
                start.arrive_and_wait();
                try {
                    f();
                } catch (const std::exception& e) {
                    std::lock_guard lock(mutex);
                    errors.push_back(e.what());
                }
            });
        };
        std::thread threads[] = {run([&] { service.put_item("pp", pp[0], meta(0)); }),
                                 run([&] { service.put_item("pp", pp[1], meta(1)); }),
                                 run([&] { service.put_item("pr", pr[0], meta(0)); }),
                                 run([&] { service.remove_item("pr"); })};
        for (auto& t : threads) t.join();
        for (const auto& e : errors) ADD_FAILURE() << "a gallery change failed: " << e;
        ASSERT_NO_FATAL_FAILURE(expect_agreement(g, "pp", pp));
        ASSERT_NO_FATAL_FAILURE(expect_agreement(g, "pr", pr));
        if (::testing::Test::HasFailure()) return;
    }
}

TEST(HostServiceGallery, RacingChangesOfOneIdLeaveStorageAndEveryIndexInStep) {
    TempDir dir("sightline-service-race");
    GalleryHost g(dir.path());
    const auto files = gallery_images();
    const std::vector<Bytes> pp{read_bytes(files.at(1)), read_bytes(files.at(2))}, pr{read_bytes(files.at(3))};
    race(*g.service, pp, pr, 40, g);
    if (HasFailure()) return;
    // A clean shutdown snapshots the indexes; the next start must still agree.
    g.host->save_snapshots();
    g.restart();
    expect_agreement(g, "pp", pp);
    expect_agreement(g, "pr", pr);
    // More races, then a crash (no snapshot): the start replays the journal after the snapshot.
    race(*g.service, pp, pr, 10, g);
    g.restart();
    expect_agreement(g, "pp", pp);
    expect_agreement(g, "pr", pr);
}

TEST(HostService, AJobAbandonedByA504IsStillDrained) {
    TempDir dir("sightline-service");
    LoadedConfig c = load_config_file((source_dir() / "config" / "default.yaml").string());
    apply_override(c, "plugins.paths=[" + yq(plugin_dir()) + "]");
    apply_override(c, "storages.gallery.root=" + (dir.path() / "gallery").string());
    apply_override(c, "limits.workers=1");
    apply_override(c, "limits.request_timeout=50ms");
    apply_override(c, "logging.level=warn");
    Host host(std::move(c));
    HostService service(host);
    service.load_gallery();

    // The only worker is parked, so the recognition stays queued past its deadline.
    std::promise<void> release;
    auto parked = host.workers().submit([f = release.get_future().share()] { f.wait(); });
    Request r;
    r.image = to_bytes(jpeg_string(easy_photo(gallery_images().at(0))));
    Error e = capture_error([&] { service.recognize(r); });
    EXPECT_EQ(e.code(), ErrorCode::deadline_exceeded) << e.what();

    // The caller has its 504, but the job still holds the service: drain must count it.
    EXPECT_EQ(service.drain(std::chrono::milliseconds(0)), 1u);
    release.set_value();
    parked.get();
    EXPECT_EQ(service.drain(std::chrono::seconds(10)), 0u);
}

// What a client and the start-up see of one item: the image and metadata get_item serves, each
// pipeline's record of it, and the keys under images/ (no stray object of a failed change).
struct ItemState {
    std::optional<Bytes> image;
    std::string metadata;
    std::vector<std::optional<Bytes>> records;
    std::vector<std::string> image_keys;
    bool operator==(const ItemState&) const = default;
};

void PrintTo(const ItemState& s, std::ostream* os) {
    *os << "{image: " << (s.image ? std::to_string(s.image->size()) + " bytes" : "none") << ", metadata: '" << s.metadata
        << "', records:";
    for (const auto& r : s.records) *os << " " << (r ? std::to_string(r->size()) + " bytes" : "none");
    *os << ", keys:";
    for (const auto& k : s.image_keys) *os << " " << k;
    *os << "}";
}

ItemState state_of(GalleryHost& g, const std::string& id) {
    ItemState s;
    if (auto item = g.service->get_item(id)) {
        s.image = item->image;
        s.metadata = item->metadata_json;
    }
    for (const auto& name : g.host->pipeline_names())
        s.records.push_back(g.host->gallery().record(g.host->pipeline(name).signature(), id));
    for (const auto& key : g.host->gallery().storage().list("images/"))
        if (key.find(id) != std::string::npos) s.image_keys.push_back(key);
    return s;
}

// PUT of an existing id while the storage fails at its n-th put (once, or from then on like a full
// disk), for every n until a put gets through: each failure leaves the old item exactly as it was,
// before and after a restart, and the failure is a retryable error.
TEST(HostServiceGallery, AFailedReplaceLeavesTheOldItemAsItWas) {
    TempDir dir("sightline-service-replace");
    GalleryHost g(dir.path());
    const auto files = gallery_images();
    const std::vector<Bytes> images{read_bytes(files.at(4)), read_bytes(files.at(5))};
    for (const std::string mode : {"once", "full"}) {
        SCOPED_TRACE("mode " + mode);
        g.service->put_item("x", images[0], meta(0));
        const ItemState before = state_of(g, "x");
        ASSERT_TRUE(before.image);
        bool stored = false;
        int failures = 0;
        for (int n = 1; n <= 12 && !stored; ++n) {
            SCOPED_TRACE("failing put " + std::to_string(n));
            g.fail_put(n, mode);
            try {
                g.service->put_item("x", images[1], meta(1));
                stored = true;
            } catch (const Error& e) {
                ++failures;
                EXPECT_EQ(e.code(), ErrorCode::unavailable) << e.what();
            }
            g.heal();
            if (stored) break;
            ItemState now = state_of(g, "x");
            EXPECT_EQ(now.image, before.image);
            EXPECT_EQ(now.metadata, before.metadata);
            EXPECT_EQ(now.image_keys, before.image_keys);
            // A full disk may keep the old records from being put back; the start-up below
            // recomputes them (the same bytes: the image is the same).
            if (mode == "once") {
                EXPECT_EQ(now.records, before.records);
            }
            expect_agreement(g, "x", images);
            g.restart();
            EXPECT_EQ(state_of(g, "x"), before);
            expect_agreement(g, "x", images);
            if (HasFailure()) return;
        }
        ASSERT_TRUE(stored) << "the replace never got through";
        // The journal, the image and the item record each failed once before one got through.
        EXPECT_GE(failures, 3);
        expect_agreement(g, "x", images);
        EXPECT_EQ(g.service->get_item("x")->image, images[1]);
        g.restart();
        expect_agreement(g, "x", images);
    }
}

// The same for an id that is new: a failed PUT leaves nothing of it, no stray metadata either.
TEST(HostServiceGallery, AFailedPutOfANewItemLeavesNothing) {
    TempDir dir("sightline-service-new");
    GalleryHost g(dir.path());
    const auto files = gallery_images();
    g.service->put_item("other", read_bytes(files.at(7)), "{}");  // the signatures have their markers
    for (const std::string mode : {"once", "full"}) {
        SCOPED_TRACE("mode " + mode);
        const std::string id = "new-" + mode;
        const std::vector<Bytes> images{read_bytes(files.at(mode == "once" ? 6 : 8))};
        bool stored = false;
        for (int n = 1; n <= 12 && !stored; ++n) {
            SCOPED_TRACE("failing put " + std::to_string(n));
            g.fail_put(n, mode);
            try {
                g.service->put_item(id, images[0], meta(0));
                stored = true;
            } catch (const Error& e) {
                EXPECT_EQ(e.code(), ErrorCode::unavailable) << e.what();
            }
            g.heal();
            if (stored) break;
            const ItemState nothing{std::nullopt, "", {std::nullopt, std::nullopt}, {}};
            EXPECT_EQ(state_of(g, id), nothing);
            EXPECT_FALSE(g.host->gallery().contains(id));
            expect_agreement(g, id, images);
            g.restart();
            EXPECT_EQ(state_of(g, id), nothing);
            expect_agreement(g, id, images);
            if (HasFailure()) return;
        }
        ASSERT_TRUE(stored);
        expect_agreement(g, id, images);
    }
}

// A stored item damaged on disk (cut short, a byte changed, garbage metadata) is reported as
// data_loss naming the item, not served; the message shows no server path. Items in the old layout
// (no checksum) still load, and are checked by decoding their image and parsing their metadata.
TEST(HostServiceGallery, DamagedItemsAreReportedNotServed) {
    TempDir dir("sightline-service-damage");
    GalleryHost g(dir.path());
    const auto files = gallery_images();
    const fs::path images = dir.path() / "gallery" / "images";
    auto image_file = [&](const std::string& id) {
        for (const auto& e : fs::directory_iterator(images / id)) return e.path();
        return fs::path();
    };
    auto expect_damaged = [&](const std::string& id) {
        SCOPED_TRACE("item '" + id + "'");
        Error e = capture_error([&] { g.service->get_item(id); });
        EXPECT_EQ(e.code(), ErrorCode::data_loss) << e.what();
        EXPECT_THAT(e.what(), HasSubstr("'" + id + "'"));
        EXPECT_THAT(e.what(), ::testing::Not(HasSubstr(dir.path().string())));
    };

    g.service->put_item("cut", read_bytes(files.at(10)), "{}");
    auto bytes = read_bytes(image_file("cut"));
    bytes.resize(bytes.size() / 2);
    write_bytes(image_file("cut"), bytes);
    expect_damaged("cut");

    g.service->put_item("flipped", read_bytes(files.at(11)), "{}");
    bytes = read_bytes(image_file("flipped"));
    bytes[bytes.size() / 2] ^= 0x20;
    write_bytes(image_file("flipped"), bytes);
    expect_damaged("flipped");

    g.service->put_item("garbled", read_bytes(files.at(12)), R"({"a": 1})");
    write_text(images / "garbled.item", "{\"image\": \"0123");
    expect_damaged("garbled");

    // The old layout: an image and its metadata as files.
    bytes = read_bytes(files.at(13));
    write_bytes(images / "old-intact.jpg", bytes);
    write_text(images / "old-intact.json", R"({"title": "intact"})");
    write_bytes(images / "old-cut.jpg", Bytes(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)));
    write_bytes(images / "old-garbage.jpg", bytes);
    write_text(images / "old-garbage.json", "{\"title\": tru");
    auto intact = g.service->get_item("old-intact");
    ASSERT_TRUE(intact);
    EXPECT_EQ(intact->image, bytes);
    EXPECT_EQ(nlohmann::json::parse(intact->metadata_json)["title"], "intact");
    expect_damaged("old-cut");
    expect_damaged("old-garbage");

    // The intact items are still served.
    g.service->put_item("fine", read_bytes(files.at(14)), "{}");
    EXPECT_TRUE(g.service->get_item("fine"));
}

// --- one writer per gallery: `sightline ingest` beside a running `sightline serve` -------------


// `sightline --config CONFIG serve` in a child process, output to a log file.
struct Server {
    pid_t pid = -1;
    fs::path log;
    Server(const fs::path& config, fs::path log_file) : log(std::move(log_file)) {
        std::string cli = SIGHTLINE_CLI, opt = "--config", config_arg = config.string(), cmd = "serve";
        std::vector<char*> argv{cli.data(), opt.data(), config_arg.data(), cmd.data(), nullptr};
        const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) throw std::runtime_error("cannot write " + log.string());
        pid = ::fork();
        if (pid == 0) {
            ::dup2(out, 1);
            ::dup2(out, 2);
            ::execv(cli.c_str(), argv.data());
            ::_exit(127);
        }
        ::close(out);
    }
    // Waits for the "ready" line; false if it exits or takes more than a minute.
    bool ready() {
        for (int i = 0; i < 1200; ++i) {
            if (fs::exists(log) && read_text(log).find("ready:") != std::string::npos) return true;
            if (::waitpid(pid, nullptr, WNOHANG) == pid) {
                pid = -1;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }
    int stop(int signal) {
        int status = 0;
        ::kill(pid, signal);
        ::waitpid(pid, &status, 0);
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    ~Server() {
        if (pid > 0) stop(SIGKILL);
    }
};

struct CliGallery {
    explicit CliGallery(const fs::path& dir) : dir(dir) {
        fs::create_directories(dir / "in");
        const auto files = gallery_images();
        for (int i = 0; i < 3; ++i) fs::copy_file(files.at(20 + i), dir / "in" / files.at(20 + i).filename());
        write_text(config(), "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
                             "storages:\n  gallery: { type: local, root: " + yq(dir / "gallery") + ", fsync: false }\n"
                             "gallery: { storage: gallery }\n"
                             "pipelines:\n  orb:\n    features: { type: orb, max_features: 300 }\n"
                             "    index: { type: bruteforce }\n"
                             "limits: { workers: 1 }\n"
                             "logging: { level: info }\n"
                             "transports:\n  - { type: http, listen: \"127.0.0.1:0\" }\n");
    }
    fs::path config() const { return dir / "serve.yaml"; }
    ShellRun ingest() const {
        return run_shell(sh_quote(SIGHTLINE_CLI) + " --config " + sh_quote(config().string()) +
                         " --log-level warn ingest " + sh_quote((dir / "in").string()) + " 2>&1");
    }
    fs::path dir;
};

TEST(GalleryLease, IngestIsRefusedWhileServeHoldsTheGalleryAndAllowedAfterIt) {
    TempDir dir("sightline-lease-serve");
    CliGallery g(dir.path());
    {
        Server serve(g.config(), dir / "serve.log");
        ASSERT_TRUE(serve.ready()) << read_text(dir / "serve.log");
        ShellRun refused = g.ingest();
        EXPECT_NE(refused.status, 0) << refused.out;
        EXPECT_THAT(refused.out, HasSubstr("sightline serve"));
        EXPECT_THAT(refused.out, HasSubstr("pid " + std::to_string(serve.pid)));
        EXPECT_THAT(refused.out, HasSubstr("PUT /v1/gallery"));  // what to do instead
        EXPECT_THAT(refused.out, ::testing::Not(HasSubstr("ingested")));
        EXPECT_EQ(serve.stop(SIGTERM), 0) << read_text(dir / "serve.log");
    }
    ShellRun allowed = g.ingest();
    EXPECT_EQ(allowed.status, 0) << allowed.out;
    EXPECT_THAT(allowed.out, HasSubstr("ingested 3 of 3"));
}

TEST(GalleryLease, AServerKilledWithSigkillDoesNotBlockIngestForever) {
    TempDir dir("sightline-lease-kill9");
    CliGallery g(dir.path());
    {
        Server serve(g.config(), dir / "serve.log");
        ASSERT_TRUE(serve.ready()) << read_text(dir / "serve.log");
        EXPECT_EQ(serve.stop(SIGKILL), 128 + SIGKILL);
    }
    // Its lease is still in the storage, but its process is gone.
    ShellRun allowed = g.ingest();
    EXPECT_EQ(allowed.status, 0) << allowed.out;
    EXPECT_THAT(allowed.out, HasSubstr("ingested 3 of 3"));
}

// The lease without the CLI on one side: a process holding a serve lease keeps ingest out, one
// holding an ingest lease keeps serve from starting.
TEST(GalleryLease, AHoldingHostKeepsIngestOutAndAnIngestKeepsServeFromStarting) {
    TempDir dir("sightline-lease-host");
    CliGallery g(dir.path());
    auto host = std::make_unique<Host>(load_config_file(g.config()));
    {
        GalleryLease lease(host->gallery(), GalleryLease::Kind::serve);
        ShellRun refused = g.ingest();
        EXPECT_NE(refused.status, 0) << refused.out;
        EXPECT_THAT(refused.out, HasSubstr("pid " + std::to_string(::getpid())));
        // Another server may share the gallery.
        GalleryLease another(host->gallery(), GalleryLease::Kind::serve);
    }
    ShellRun allowed = g.ingest();
    EXPECT_EQ(allowed.status, 0) << allowed.out;
    {
        GalleryLease lease(host->gallery(), GalleryLease::Kind::ingest);
        Server serve(g.config(), dir / "serve.log");
        EXPECT_FALSE(serve.ready());
        EXPECT_THAT(read_text(dir / "serve.log"), HasSubstr("in use by `sightline ingest`"));
    }
    EXPECT_TRUE(host->gallery().storage().list(host->gallery().lease_prefix()).empty()) << "a lease was left behind";
}

// A holder on another host cannot be asked whether it runs: its lease counts until its heartbeat
// is older than its ttl.
TEST(GalleryLease, AnotherHostsLeaseCountsUntilItsHeartbeatIsOld) {
    TempDir dir("sightline-lease-remote");
    CliGallery g(dir.path());
    auto host = std::make_unique<Host>(load_config_file(g.config()));
    const std::string key = host->gallery().lease_prefix() + "serve-elsewhere-1";
    auto put_lease = [&](std::chrono::seconds age) {
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
        const std::string body = nlohmann::json{{"command", "serve"}, {"host", "elsewhere.example"}, {"pid", 1},
                                                {"started", now - 3600}, {"heartbeat", now - age.count()},
                                                {"ttl", 60}}.dump();
        host->gallery().storage().put(key, to_bytes(body));
    };
    put_lease(std::chrono::seconds(5));
    Error e = capture_error([&] { GalleryLease lease(host->gallery(), GalleryLease::Kind::ingest); });
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_THAT(e.what(), HasSubstr("pid 1 on elsewhere.example"));
    put_lease(std::chrono::seconds(61));
    {
        GalleryLease lease(host->gallery(), GalleryLease::Kind::ingest);
        EXPECT_FALSE(host->gallery().storage().exists(key)) << "the stale lease was not removed";
    }
}

}  // namespace
