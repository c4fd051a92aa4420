#pragma once
// Everything a plugin library includes: the kinds, the Context and the registration macro.
#include <boost/dll/alias.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

#include "sightline/config.hpp"
#include "sightline/context.hpp"
#include "sightline/features.hpp"
#include "sightline/index.hpp"
#include "sightline/plugin_base.hpp"
#include "sightline/sink.hpp"
#include "sightline/storage.hpp"
#include "sightline/transport.hpp"
#include "sightline/version.hpp"

namespace sightline {

// Plain data with C layout, read by the host before it calls anything in the library. New fields
// go at the end (raising the ABI minor version); struct_size lets the host detect them.
struct PluginManifest {
    std::uint32_t abi_major;
    std::uint32_t abi_minor;
    std::uint32_t struct_size;
    PluginKind kind;
    const char* name;            // "orb" for features-orb
    const char* plugin_version;  // the plugin's own version
    const char* build_id;        // SIGHTLINE_BUILD_ID the plugin was compiled with
    const char* description;
    const ConfigKey* config_keys;
    std::size_t config_key_count;
    // Returns an owning pointer; the host wraps it at once together with a reference to the library.
    Plugin* (*create)(Context& context);
};

template <PluginKind K> struct kind_base;
template <> struct kind_base<PluginKind::features> { using type = FeatureExtractor; };
template <> struct kind_base<PluginKind::index> { using type = Index; };
template <> struct kind_base<PluginKind::storage> { using type = Storage; };
template <> struct kind_base<PluginKind::transport> { using type = Transport; };
template <> struct kind_base<PluginKind::sink> { using type = ResultSink; };
template <PluginKind K> using kind_base_t = typename kind_base<K>::type;

namespace plugin_detail {
template <class T> Plugin* create(Context& context) {
    return std::make_unique<T>(context).release();
}
}  // namespace plugin_detail

// A plugin class provides:
//   explicit Class(sightline::Context&);
//   static constexpr const char* version = "1.0.0";
//   static constexpr const char* description = "one line";
//   static sightline::ConfigSchema config_schema();   (an empty span if it takes no keys)
template <PluginKind K, class T> PluginManifest make_manifest(const char* name) {
    static_assert(std::is_base_of_v<kind_base_t<K>, T>, "the plugin class does not derive from its kind's interface");
    static_assert(std::is_constructible_v<T, Context&>, "the plugin class needs a constructor taking sightline::Context&");
    ConfigSchema schema = T::config_schema();
    return PluginManifest{SIGHTLINE_ABI_MAJOR,
                          SIGHTLINE_ABI_MINOR,
                          static_cast<std::uint32_t>(sizeof(PluginManifest)),
                          K,
                          name,
                          T::version,
                          SIGHTLINE_BUILD_ID,
                          T::description,
                          schema.data(),
                          schema.size(),
                          &plugin_detail::create<T>};
}

}  // namespace sightline

// One per library: SIGHTLINE_PLUGIN(features, "orb", OrbExtractor). Exports only the manifest.
#define SIGHTLINE_PLUGIN(KIND, NAME, CLASS)                                                    \
    namespace sightline_plugin_registration {                                                  \
    const ::sightline::PluginManifest sightline_manifest =                                     \
        ::sightline::make_manifest<::sightline::PluginKind::KIND, CLASS>(NAME);                \
    }                                                                                          \
    BOOST_DLL_ALIAS(sightline_plugin_registration::sightline_manifest, sightline_plugin_manifest)
