package dev.kairos;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** A test class whose tests share one Kairos broker, started before them and stopped after. */
abstract class OneBrokerTest {
    static KairosBroker broker;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = KairosBroker.start();
    }

    @AfterAll
    static void stopBroker() throws Exception {
        broker.close();
    }
}
