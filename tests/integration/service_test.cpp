// HostService on a real Host: the work it accounts for outlives callers that gave up.
#include <gtest/gtest.h>

#include <future>

#include "photos.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;

namespace {

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

}  // namespace
