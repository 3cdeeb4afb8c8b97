package org.taremonitor.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.persistence.EntityManagerFactory;
import java.util.List;
import java.util.Map;
import javax.sql.DataSource;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * The smallest HAPI FHIR JPA server the job's tests need: R4 on PostgreSQL (the database
 * hospitals run it on), the resource providers of every type, paging, Bulk Data {@code $export}
 * (batch2 jobs), and every write validated against the R4 core definitions (an error rejects it). {@code $expunge} is on,
 * so a test can empty the server between tests.
 *
 * <p>Started by {@code tests/servers/hapi.sh start PORT}, which starts a private PostgreSQL
 * cluster first and passes its URL, user and password as Spring properties; the FHIR base is
 * {@code /fhir}.
 */
// HAPI brings its own JPA set-up and scheduler, and the Elasticsearch client it can use: Spring
// Boot's versions of these stay off.
@SpringBootApplication(
        exclude = {
            QuartzAutoConfiguration.class,
            HibernateJpaAutoConfiguration.class,
            ElasticsearchRestClientAutoConfiguration.class,
            ElasticsearchClientAutoConfiguration.class
        })
@Import({
    JpaR4Config.class,
    HapiJpaConfig.class,
    JpaBatch2Config.class,
    Batch2JobsConfig.class,
    // In-memory message channels: how batch2 (the export jobs) hands work between its steps.
    SubscriptionChannelConfig.class,
    ThreadPoolFactoryConfig.class
})
public class TestFhirServer {

    public static void main(String[] args) {
        SpringApplication.run(TestFhirServer.class, args);
    }

    @Bean
    public JpaStorageSettings storageSettings() {
        JpaStorageSettings settings = new JpaStorageSettings();
        // A test empties the server with $expunge, and removes resources others refer to.
        settings.setExpungeEnabled(true);
        settings.setAllowMultipleDelete(true);
        settings.setEnforceReferentialIntegrityOnDelete(false);
        // Bulk export jobs are run by the batch2 scheduler: keep it on, and fast.
        settings.setSchedulingDisabled(false);
        settings.setJobFastTrackingEnabled(true);
        return settings;
    }

    @Bean
    public PartitionSettings partitionSettings() {
        return new PartitionSettings();
    }

    @Bean
    public SubscriptionSettings subscriptionSettings() {
        return new SubscriptionSettings();
    }

    @Primary
    @Bean
    public LocalContainerEntityManagerFactoryBean entityManagerFactory(
            ConfigurableListableBeanFactory beanFactory,
            FhirContext fhirContext,
            JpaStorageSettings storageSettings,
            DataSource dataSource) {
        LocalContainerEntityManagerFactoryBean factory =
                HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
        factory.setPersistenceUnitName("HAPI_PU");
        factory.setDataSource(dataSource);
        factory.setJpaPropertyMap(Map.of(
                "hibernate.dialect", HapiFhirPostgresDialect.class.getName(),
                "hibernate.hbm2ddl.auto", "update",
                "hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner",
                "hibernate.jdbc.batch_size", "20",
                "hibernate.cache.use_query_cache", "false",
                "hibernate.cache.use_second_level_cache", "false",
                "hibernate.search.enabled", "false",
                "hibernate.format_sql", "false",
                "hibernate.show_sql", "false"));
        return factory;
    }

    @Primary
    @Bean
    public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
        JpaTransactionManager manager = new JpaTransactionManager();
        manager.setEntityManagerFactory(entityManagerFactory);
        return manager;
    }

    @Bean
    public RestfulServer restfulServer(
            IFhirSystemDao<?, ?> systemDao,
            ResourceProviderFactory resourceProviders,
            IJpaSystemProvider systemProvider,
            JpaStorageSettings storageSettings,
            ISearchParamRegistry searchParamRegistry,
            IValidationSupport validationSupport,
            DatabaseBackedPagingProvider pagingProvider,
            BulkDataExportProvider bulkDataExportProvider,
            IValidatorModule validatorModule,
            @Value("${tare.validate-writes:true}") boolean validateWrites) {
        RestfulServer server = new RestfulServer(systemDao.getContext());
        server.registerProviders(resourceProviders.createProviders());
        server.registerProvider(systemProvider);
        server.registerProvider(bulkDataExportProvider);
        server.setServerConformanceProvider(new JpaCapabilityStatementProvider(
                server, systemDao, storageSettings, searchParamRegistry, validationSupport));
        // Pages of 20 by default and at most 200, as the HAPI starter project configures them
        // (the library's own cap is 50).
        pagingProvider.setDefaultPageSize(20);
        pagingProvider.setMaximumPageSize(200);
        server.setPagingProvider(pagingProvider);
        server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
        // Every write is validated; an error-level finding rejects it (422). Only a benchmark
        // loading data it generated turns this off (--tare.validate-writes=false).
        if (validateWrites) {
            RequestValidatingInterceptor validation = new RequestValidatingInterceptor();
            validation.setFailOnSeverity(ResultSeverityEnum.ERROR);
            validation.setValidatorModules(List.of(validatorModule));
            server.registerInterceptor(validation);
        }
        return server;
    }

    @Bean
    public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer server) {
        ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(server, "/fhir/*");
        registration.setLoadOnStartup(1);
        return registration;
    }
}
