// Android library module that packages the generated Kotlin bindings of linli-ffi with
// liblinli_ffi.so for each ABI. Run `mobile-bindings/build.sh android` first: both inputs are
// build output under mobile-bindings/build/ and are never committed.
//
// In an app's settings.gradle.kts:
//     include(":linli")
//     project(":linli").projectDir = file("path/to/linli/mobile-bindings/android")
// and in the app module: dependencies { implementation(project(":linli")) }

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "linli.ffi"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].apply {
        // linli/ffi/linli_ffi.kt, generated in library mode by build.sh.
        java.srcDir("../build/bindings/kotlin")
        // <abi>/liblinli_ffi.so, built by build.sh with cargo-ndk.
        jniLibs.srcDir("../build/android/jniLibs")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The generated Kotlin calls the library through JNA; the @aar carries JNA's own .so files.
    implementation("net.java.dev.jna:jna:5.14.0@aar")
}
